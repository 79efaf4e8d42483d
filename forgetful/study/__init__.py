"""The learning–forgetting study: what to run (`plan`), what made a point (`fingerprint`),
running it on DVC's queue (`queue`), reading finished points back and keeping their
per-item scores (`collect`). Statistics and the report live in forgetful.report.

May import: forgetful.core, forgetful.data, forgetful.evaluate, forgetful.train,
forgetful.report.
"""
