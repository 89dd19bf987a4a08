"""`ecdc eval`: quality metrics, Opus as a yardstick, the runs and their report, the plot."""
