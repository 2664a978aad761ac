//! SQLite connection layer (owned by the sqlite-layer helper).
