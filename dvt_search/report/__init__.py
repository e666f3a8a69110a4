"""The comparison report of a selected run: HTML + Markdown, figures, search history, CAM cases.

``context`` loads everything a report reads once; ``sections`` and ``analysis`` turn it into document
blocks (``render``), ``figures`` draws the plots, ``build`` writes ``report.html`` and ``report.md``.
"""
