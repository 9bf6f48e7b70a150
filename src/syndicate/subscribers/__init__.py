"""Readers: consent (sign-up, confirmation, unsubscribe, preferences), bounces and complaints, CSV
lists, the timeline."""
