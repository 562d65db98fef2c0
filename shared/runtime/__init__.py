"""What every stage runs on: the consume loop and unit of work, the service app, the database pool and
migrations, settings, metrics, logs, traces, Kafka credentials and staff identity."""
