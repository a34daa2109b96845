"""report.py's wing, one job a module: reading the runs (runs), their words and tables
(text), the works cited (references), the spectrograms (figures), the commit and the
code's address (metadata), the slides (slides) and the listening page (listening,
listening.html)."""
