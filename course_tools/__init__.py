"""The tools behind the course, apart from the library a learner imports.

- :mod:`course_tools.train`: the scripts that produce ``data/models/`` (``python -m course_tools.train``).
- :mod:`course_tools.bench`: each lesson's measured quality (``python -m course_tools.bench <suite>``).

They import :mod:`course_lib`; :mod:`course_lib` never imports them.
"""
