import Foundation
import GRDB

/// Named, forward-only schema migrations. Never edit a shipped migration: add a new one.
enum Migrations {
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("2026-11-29-jobs") { db in
            try db.execute(sql: """
                CREATE TABLE jobs (
                  id INTEGER PRIMARY KEY AUTOINCREMENT,
                  source TEXT NOT NULL,
                  content_hash TEXT NOT NULL,
                  state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed','cancelled','rejected')),
                  priority INTEGER NOT NULL DEFAULT 0,
                  name TEXT,
                  model TEXT,
                  model_directory TEXT,
                  strategy TEXT,
                  spec TEXT,
                  problems TEXT,
                  error TEXT,
                  run INTEGER NOT NULL DEFAULT 1,
                  attempts INTEGER NOT NULL DEFAULT 0,
                  max_attempts INTEGER NOT NULL,
                  lease TEXT,
                  cancel_requested INTEGER NOT NULL DEFAULT 0,
                  intake_pending INTEGER NOT NULL DEFAULT 0,
                  stored_as TEXT,
                  created_at REAL NOT NULL,
                  updated_at REAL NOT NULL,
                  started_at REAL,
                  finished_at REAL
                );
                CREATE INDEX jobs_queue ON jobs (state, priority DESC, id);
                CREATE INDEX jobs_source ON jobs (source, content_hash);
                CREATE TABLE prompts (
                  job_id INTEGER NOT NULL REFERENCES jobs(id),
                  idx INTEGER NOT NULL,
                  prompt_id TEXT NOT NULL,
                  text TEXT NOT NULL,
                  PRIMARY KEY (job_id, idx)
                );
                CREATE TABLE outputs (
                  job_id INTEGER NOT NULL REFERENCES jobs(id),
                  run INTEGER NOT NULL,
                  idx INTEGER NOT NULL,
                  text TEXT NOT NULL,
                  tokens TEXT NOT NULL,
                  metrics TEXT NOT NULL,
                  attempt INTEGER NOT NULL,
                  finished_at REAL NOT NULL,
                  PRIMARY KEY (job_id, run, idx)
                );
                CREATE TABLE events (
                  id INTEGER PRIMARY KEY AUTOINCREMENT,
                  job_id INTEGER NOT NULL REFERENCES jobs(id),
                  at REAL NOT NULL,
                  from_state TEXT,
                  to_state TEXT NOT NULL,
                  note TEXT
                );
                CREATE INDEX events_job ON events (job_id, id);
                """)
        }
        // A job released after a store failure waits this long before it is claimed again.
        m.registerMigration("2026-12-01-not-before") { db in
            try db.execute(sql: "ALTER TABLE jobs ADD COLUMN not_before REAL")
        }
        return m
    }
}
