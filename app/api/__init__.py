"""HTTP surfaces: one router per surface, no image maths here."""
