"""The plan: everything one deploy will do, read and checked before anything is sent or changed."""
