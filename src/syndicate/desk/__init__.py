"""The editors' desk: signed-in pages (/desk) and a JSON API with per-editor tokens (/api/v1, documented at
/docs) to watch and steer what goes out. Both call the same domain functions as the CLI and add no logic
of their own. Each module here holds one area's pages and API routes side by side:

  core         sessions, CSRF, who is asking (a signed-in editor, or an editor's API token), the services
  auth         sign in and out; an editor's own API tokens
  today        the calendar of the next days, the social kill switch, accounts
  newsletters  settings, filters, template, the schedule in words and its next sends; pause, resume, prepare,
               archive, delete
  social       one teaser: edit it with a live count, schedule, hold, cancel, re-share
  editions     one edition: preview, edit, test-send, schedule, pause, resume, cancel, resend
  feeds        feeds with their health, add one, fetch one now, disable, delete; recent articles and where each went
  subscribers  search, add one, one subscriber's timeline, leave and restore; CSV import with its progress, export
  accounts     social accounts: connect one; pause, disable, enable, delete
  removals     every feed, newsletter and account disabled, archived or deleted, by whom, with what it took

and the editors' own: `editors` (accounts, passwords, sign-in limits), `agenda` (the calendar), `trail`
(where each article went). `routes` assembles the pages and the API for the web app; importing this
package alone loads none of it, so the CLI can manage editors without the web stack.
"""
