"""Release mode: ship a built artifact, switch ``APP_DIR/current`` atomically, roll back, remember."""
