"""What reads a finished run: `report` (report.md, the headline, compare) and `report_html`,
`flow` (each question's path through the iterations), `transfer` (other students on a run's
data), `export` (the distilled dataset and the merged student), `tracking` (experiment
trackers)."""
