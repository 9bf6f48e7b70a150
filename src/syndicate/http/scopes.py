"""Every API token scope, and what it allows: one per route that takes a token. Apart from the tokens
themselves so that `syndicate token --help` can list them without loading the database."""

SCOPES = {
    "articles:push": "push stories (POST /api/articles), which go out to readers and social accounts",
    "metrics:read": "read the Prometheus metrics (GET /metrics)",
    "events:bounces": "report bounces and complaints (POST /api/events/bounces), which stop mail to addresses",
    "stats:read": "read what editions did: rates and clicks per story (GET /api/editions/{id}/results)",
    "desk:api": "act as its editor on the desk's API (/api/v1); only an editor's own token has it",
}
EDITOR_SCOPE = "desk:api"
