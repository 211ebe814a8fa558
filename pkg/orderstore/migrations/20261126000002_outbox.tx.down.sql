DROP TABLE watermill_outbox;
