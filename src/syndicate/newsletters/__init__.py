"""article → edition: the newsletters (lists) and their schedules, the cut and an edition's life
(editions), the render once per edition (rendering), the archive."""
