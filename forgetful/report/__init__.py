"""The forgetting report: base vs tuned with paired bootstrap intervals (`forgetting`)
and its figures (`figures`).

May import: forgetful.core, forgetful.data, forgetful.evaluate, forgetful.train.
"""
