"""Knowledge distillation as a search: small, fast students trained from a registered teacher.

``python -m platform.distill --teacher models:/NAME@champion [SPACE]`` (see docs/distillation.md):
the teacher labels the shot's labelled and unlabelled frames once (:mod:`platform.distill.cache`),
then the ordinary search driver trains students on the ground truth and the teacher's outputs
(:mod:`platform.distill.task`, :mod:`platform.losses.distill`), registers them as
``NAME_student`` and promotes them under the usual rules.
"""
