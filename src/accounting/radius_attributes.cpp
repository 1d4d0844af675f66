// Placeholder (issue #12): record -> RADIUS attributes.
