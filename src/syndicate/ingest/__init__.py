"""feed → article: fetching feeds from the hostile web, reading them, cleaning stories, and stories pushed by a CMS."""
