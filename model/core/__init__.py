"""The bottom layer: errors, atomic writes, embedding distances and command-line behaviour.

Imports nothing from the rest of the project and nothing heavier than NumPy.
"""
