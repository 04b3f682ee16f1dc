"""The FastAPI baseline of issue 15: what a hand-written backend does for the same two
requests, with asyncpg. Started by `benches/usage.rs` and `benches/read_path.rs`
(`uvicorn app:app`, one worker per core); DATABASE_URL names a database migrated by
Chronicle.

POST /metrics {"kind", "amount"}: one INSERT.
GET /users/status?email=: one SELECT, the same JSON as Chronicle's.
"""

import os
import uuid
from datetime import datetime, timezone

import asyncpg
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
pool = None


@app.on_event("startup")
async def startup():
    global pool
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=10, max_size=10)
    await pool.execute(
        "create table if not exists fastapi_usage ("
        " id uuid primary key, kind text not null, amount bigint not null,"
        " occurred_at timestamptz not null)"
    )


class Usage(BaseModel):
    kind: str
    amount: int


@app.post("/metrics", status_code=202)
async def record(usage: Usage):
    await pool.execute(
        "insert into fastapi_usage (id, kind, amount, occurred_at) values ($1, $2, $3, $4)",
        uuid.uuid4(),
        usage.kind,
        usage.amount,
        datetime.now(timezone.utc),
    )
    return {"data": {"accepted": True}}


@app.get("/users/status")
async def status(email: str):
    row = await pool.fetchrow(
        "select email_verified, status from users where email = $1", email.lower()
    )
    if row is None:
        return {"exists": False, "email_verified": False, "status": None}
    return {"exists": True, "email_verified": row["email_verified"], "status": row["status"]}
