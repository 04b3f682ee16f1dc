//! What each command reads from the environment, for its `--help` (clap `after_help`).
//! Nothing is required in development: every variable has a default that works on one
//! machine with PostgreSQL and NATS on their usual ports, and the plans are built in.

/// Read by every command that reaches the database.
macro_rules! database_vars {
    () => {
        "  DATABASE_URL   PostgreSQL (default postgres://postgres@127.0.0.1:5432/chronicle)\n"
    };
}

/// Read by every command that opens or seals personal values.
macro_rules! key_vars {
    () => {
        "  MASTER_KEY     wraps every user's data key (development: generated into DATA_DIR)\n  \
         DATA_DIR       where development keys and .eml mails are written (default ./data)\n"
    };
}

/// Read by every command that reaches the stream.
macro_rules! nats_vars {
    () => {
        "  NATS_URL                  NATS with JetStream, servers separated by commas (default nats://127.0.0.1:4222)\n  \
         NATS_STREAM_REPLICAS      copies of the stream a JetStream cluster keeps (default 1; 3 on a cluster)\n  \
         CHRONICLE_STREAM          the stream (default CHRONICLE_EVENTS)\n  \
         CHRONICLE_SUBJECT_PREFIX  subjects <prefix>.events.<aggregate>.<event> (default chronicle)\n"
    };
}

pub const SERVE: &str = concat!(
    "Environment (none required in development):\n",
    database_vars!(),
    nats_vars!(),
    key_vars!(),
    "  BIND           where the API listens (default 127.0.0.1:8080; --bind overrides)\n",
    "  TRUSTED_PROXIES  load balancers whose X-Forwarded-For names the client (CIDRs; default none)\n",
    "  METRICS_BIND   where a process without the API serves /metrics (default: nowhere)\n",
    "  SECRET_KEY     signs tokens (development: generated into DATA_DIR)\n",
    "  SMTP_URL       where mail goes (unset: .eml files under DATA_DIR/mail)\n",
    "  PLANS, PLANS_FILE  plans as JSON, or a file of them (default: the built-in plans.json)\n",
    "  ADMIN_EMAIL, ADMIN_PASSWORD  seed an admin\n",
    "  LLM_BASE_URL, LLM_API_KEY    turn the assistant on\n",
    "  PG_BIN, NATS_SERVER_BIN      where the private PostgreSQL / nats-server programs are\n",
    "In development, a PostgreSQL or NATS not reachable at its local address is started privately\n",
    "under DATA_DIR on that address, and stopped on exit; never with APP_ENV=production.\n",
    "Also read from ./.env; every variable is in .env.example. APP_ENV=production requires more (docs/ACCOUNTS.md)."
);

pub const MIGRATE: &str = concat!("Environment:\n", database_vars!());

pub const DATABASE_AND_KEYS: &str = concat!(
    "Environment (none required in development):\n",
    database_vars!(),
    key_vars!(),
    "Also read from ./.env; every variable is in .env.example."
);

pub const TAIL: &str = concat!(
    "Environment (none required in development):\n",
    nats_vars!(),
    database_vars!(),
    key_vars!(),
    "Also read from ./.env; every variable is in .env.example."
);

pub const ADMIN: &str = concat!(
    "Environment (none required in development):\n",
    database_vars!(),
    key_vars!(),
    "  SMTP_URL       where invitation mails go (unset: .eml files under DATA_DIR/mail)\n",
    "A running `chronicle serve` (its projector) keeps the read models these commands wait for.\n",
    "Also read from ./.env; every variable is in .env.example."
);

pub const KEYS: &str = concat!(
    "Environment:\n",
    database_vars!(),
    "  MASTER_KEY           the key to wrap with (rotate)\n",
    "  MASTER_KEY_PREVIOUS  the keys it replaces, comma-separated (rotate)\n",
    "Also read from ./.env; every variable is in .env.example."
);
