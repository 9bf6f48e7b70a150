"""article → edition: newsletters and their schedules, the cut, the render (once per edition), QA
checks, the archive."""
