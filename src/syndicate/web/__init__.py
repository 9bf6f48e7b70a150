"""The public web app: sign-up and readers' pages, the archive, the push and bounce APIs, health and metrics."""
