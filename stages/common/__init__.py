"""Plain functions shared by the stages: config, artifacts, tracking, data, models, scoring."""
