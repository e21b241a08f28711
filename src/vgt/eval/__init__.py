"""Evaluation: ShapesEval (a GenEval-style benchmark judged exactly on ShapesWorld images) and model metrics."""
