"""drtrain worker: Celery tasks that run jobs with dr_core."""
