"""The plan: one immutable BuildPlan per image per build, from one read of its files.

plan       plan(), staged_plan(), subplan(): identifier, Dockerfile, context manifest
explain    the identifier part by part, and what changed since the last build
"""
