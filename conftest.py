collect_ignore_glob = ["notebooks/_*.ipynb", ".venv/*", "course_output/*", "runs/*"]
