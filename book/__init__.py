"""The llmlab book: Jupyter Book 1.x sources and the build that renders solutions/ as a site.

``python -m book.build`` (``make book``) writes ``book/_build/html``; see ``book/build.py``.
"""
