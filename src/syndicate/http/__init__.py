"""What the public web app and the desk share over HTTP: API tokens, API answers, the content security policy."""
