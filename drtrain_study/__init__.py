"""The reproduction study: does DR help, fairly tuned and with enough seeds? (docs/study.md)

A client of the service: every arm's jobs are submitted over HTTP with drtrain_client, and the
report is built from the API's results and metric points. Run it with ``drtrain-study``
(drtrain_study.cli); drtrain_study.run is one study from start to report, drtrain_study.plans
what it runs, drtrain_study.report and drtrain_study.plots what it writes.
"""
