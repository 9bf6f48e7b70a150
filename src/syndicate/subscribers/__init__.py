"""Readers: consent (sign-up, confirmation, unsubscribe, suppression), their preferences page, bounces and
complaints, CSV lists and desk uploads, the timeline."""
