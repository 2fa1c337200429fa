"""Monitoring: does ``@champion`` still fit the data that arrives, and should it be retrained?

A later snapshot is prepared the way training prepares one (contract, cleaning, the champion's
feature version read point-in-time through its Feast FeatureService). Its held-out athletes (the
test split, which no model trained on) are compared with the test split the champion was judged
on: data drift per feature and of the target and predictions (Evidently), and the champion's error
on both. A policy turns the figures into a retraining decision with its reasons.
"""
