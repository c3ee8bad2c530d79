"""The candle rules in Spark, shared by the streaming job and the nightly batch: transforms, session, job arguments."""
