"""Mail on the wire: message bytes, the SMTP and outbox transports, DKIM signatures, and the pace of sending."""
