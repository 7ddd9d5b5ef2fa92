"""Evaluation: what a number about a model means.

Taught in chapter 11 (solutions/11_eval).
"""
