"""Social network clients behind one small Protocol: a teaser goes in, where it landed comes out.

One module per network (x, mastodon, bluesky), behind the Protocol in base, each on the network's own
library — tweepy for X, Mastodon.py, atproto for Bluesky — built from plain values; and dry_run, which
writes the exact request to a folder, built by the same code as the live client's where the network's
library lets us (Bluesky's record).
Every failure leaves as a TransportError that says whether to try again (`permanent`), when
(`retry_at`) and whether the post may be out there already (`uncertain`); or as an AccountProblem
when the network refuses the account itself, so every post would fail the same way.

Mastodon.py and atproto are imported when a client for them is made: atproto alone takes a second
to import, and most processes (the CLI, the mail workers) never post to Bluesky.
"""
