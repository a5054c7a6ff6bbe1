"""Scoring one image: detector (patch map, poolings, top patches), explanations, guardrails
(measurements) and the policy that turns score and measurements into a tier with reasons."""
