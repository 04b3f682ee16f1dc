//! One stream message: from the `MessagePosted` envelope to the reply (or the recorded
//! failure), and what to tell JetStream.

use std::time::Duration;

use aggregates::conversation::{
    reply_id, ConversationCommand, ConversationError, ConversationEvent, AGGREGATE_TYPE,
    CONTENT_MAX, ROLE_ASSISTANT, ROLE_USER,
};
use aggregates::meter::KIND_TOKENS;
use aggregates::{EventMetadata, StreamEnvelope};
use async_nats::jetstream::Message;
use eventstore::crypto::ERASED;
use eventstore::personal::open_values;
use eventstore::CommandError;
use llm::{ChatMessage, LlmError, HISTORY_MAX};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use usecases::usage;

use super::{Inner, EVENT_TYPE};
use crate::backoff::Backoff;
use crate::durable::Verdict;

/// The reason recorded when the day's tokens are used up.
pub const TOKENS_LIMIT_REACHED: &str = "tokens limit reached";

/// A user message to answer.
struct Question {
    conversation_id: Uuid,
    owner_id: Uuid,
    message_id: Uuid,
    content: String,
    /// The conversation's sequence of the event: the messages before it are the context.
    sequence: u64,
    /// The metadata of everything the answer appends.
    metadata: EventMetadata,
}

impl Inner {
    pub(super) async fn handle(&self, message: &Message, stop: &CancellationToken) -> Verdict {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let mut envelope: StreamEnvelope = match serde_json::from_slice(&message.payload) {
            // older versions of an event are read as the current one (eventstore::upcast)
            Ok(e) => eventstore::StoredEvent::from_envelope(e).into_envelope(),
            Err(e) => {
                tracing::error!(subject = %message.subject, error = %e, "Assistant cannot read a message: not an event envelope");
                return Verdict::Term;
            }
        };
        if envelope.aggregate_type != AGGREGATE_TYPE || envelope.event_type != EVENT_TYPE {
            return Verdict::Ack;
        }
        let event_id = envelope.event_id;
        if self.tuning.is_stale(envelope.recorded_at, self.clock.now()) {
            tracing::debug!(%event_id, recorded_at = %envelope.recorded_at, "Assistant skips an old message");
            metrics::counter!("chronicle_assistant_skipped_total", "reason" => "stale")
                .increment(1);
            return Verdict::Ack;
        }
        if let Err(e) = open_values(&self.keys, &mut [&mut envelope.payload]).await {
            tracing::warn!(%event_id, error = %e, "Assistant cannot open a message");
            return Verdict::Retry(self.tuning.retry_delay(delivered));
        }
        let event: ConversationEvent = match serde_json::from_value(envelope.payload.clone()) {
            Ok(e) => e,
            Err(e) => {
                // perhaps an event newer than this build: try again later
                tracing::warn!(%event_id, error = %e, "Assistant cannot decode a conversation event");
                return Verdict::Retry(self.tuning.retry_delay(delivered));
            }
        };
        let ConversationEvent::MessagePosted {
            owner_id,
            message_id,
            role,
            content,
            ..
        } = event
        else {
            return Verdict::Ack;
        };
        if role != ROLE_USER || content == ERASED {
            return Verdict::Ack;
        }
        let Ok(conversation_id) = envelope.aggregate_id.parse() else {
            tracing::error!(%event_id, "Assistant: the conversation id is not a UUID");
            return Verdict::Term;
        };
        let mut metadata = EventMetadata::system("assistant");
        metadata.causation_id = Some(event_id.to_string());
        metadata.correlation_id = envelope
            .metadata
            .correlation_id
            .clone()
            .or_else(|| Some(event_id.to_string()));
        let question = Question {
            conversation_id,
            owner_id,
            message_id,
            content,
            sequence: envelope.sequence,
            metadata,
        };
        self.answer(&question, delivered, stop).await
    }

    async fn answer(&self, q: &Question, delivered: i64, stop: &CancellationToken) -> Verdict {
        let retry = Verdict::Retry(self.tuning.retry_delay(delivered));
        let conversation = match self
            .conversations
            .load(&q.conversation_id.to_string())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(message_id = %q.message_id, error = %e, "Assistant cannot load a conversation");
                return retry;
            }
        };
        let gone = conversation
            .messages
            .get(&q.message_id)
            .is_none_or(|m| m.deleted);
        if conversation.deleted || gone || conversation.is_answered(q.message_id) {
            // answered already (a redelivery, or a prompt posted with its reply), or nothing
            // left to answer: the model is not called
            tracing::debug!(message_id = %q.message_id, "Assistant: nothing to answer");
            return Verdict::Ack;
        }
        let plan = match usage::plan_of(&self.pool, &self.plans, q.owner_id).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "Assistant cannot read the user's plan");
                return retry;
            }
        };
        let limit = plan.daily_limit(KIND_TOKENS);
        match usage::left(&self.meters, q.owner_id, self.clock.now(), limit).await {
            Ok(Some(0)) => return self.fail(q, TOKENS_LIMIT_REACHED, delivered).await,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Assistant cannot read the user's meter");
                return retry;
            }
        }
        let history = match projections::conversations::recent_messages(
            &self.pool,
            q.conversation_id,
            q.sequence as i64,
            HISTORY_MAX as i64 - 1,
        )
        .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "Assistant cannot read the conversation");
                return retry;
            }
        };
        // the question itself from the event: the read model may not have it yet
        let messages = llm::conversation(
            history
                .iter()
                .map(|m| (m.role.as_str(), m.content.as_str()))
                .chain([(ROLE_USER, q.content.as_str())]),
        );
        let started = std::time::Instant::now();
        let completion = tokio::select! {
            _ = stop.cancelled() => return Verdict::Leave,
            c = self.client.complete(&messages) => c,
        };
        metrics::histogram!("chronicle_assistant_model_seconds")
            .record(started.elapsed().as_secs_f64());
        match completion {
            Ok(c) => self.reply(q, c, limit, delivered, stop).await,
            Err(e) => self.model_failed(q, &messages, e, delivered).await,
        }
    }

    async fn model_failed(
        &self,
        q: &Question,
        messages: &[ChatMessage],
        e: LlmError,
        delivered: i64,
    ) -> Verdict {
        let attempts = delivered.max(1);
        if e.is_transient() && attempts < self.max_attempts as i64 {
            let mut delay = self.tuning.retry_delay(delivered);
            if let LlmError::Unavailable {
                retry_after: Some(after),
                ..
            } = &e
            {
                delay = delay.max(*after).min(self.tuning.max_retry_delay);
            }
            tracing::warn!(message_id = %q.message_id, attempt = attempts, retry_in_ms = delay.as_millis() as u64, reason = %e.reason(), detail = %e.detail(), "The model failed; trying again later");
            metrics::counter!("chronicle_assistant_model_errors_total", "final" => "false")
                .increment(1);
            return Verdict::Retry(delay);
        }
        tracing::warn!(message_id = %q.message_id, attempt = attempts, messages = messages.len(), reason = %e.reason(), detail = %e.detail(), "The model failed; giving up");
        metrics::counter!("chronicle_assistant_model_errors_total", "final" => "true").increment(1);
        let reason = if e.is_transient() {
            format!("{} after {attempts} attempts", e.reason())
        } else {
            e.reason()
        };
        self.fail(q, &reason, delivered).await
    }

    /// Post the reply, then record its tokens.
    async fn reply(
        &self,
        q: &Question,
        completion: llm::Completion,
        limit: Option<u64>,
        delivered: i64,
        stop: &CancellationToken,
    ) -> Verdict {
        // A model may answer anything, NUL included; the reply is kept with such characters
        // replaced (the aggregate refuses them, and refusing would lose the answer).
        let content: String = aggregates::text::scrub(completion.content.trim())
            .chars()
            .take(CONTENT_MAX)
            .collect();
        let command = ConversationCommand::PostMessage {
            by: q.owner_id,
            message_id: reply_id(q.message_id),
            role: ROLE_ASSISTANT.into(),
            content,
            in_reply_to: Some(q.message_id),
        };
        let posted = self
            .conversations
            .execute(&q.conversation_id.to_string(), command, &q.metadata)
            .await;
        match posted {
            Ok(outcome) if outcome.events.is_empty() => {
                // answered meanwhile by someone else: that answer's tokens were counted
                tracing::debug!(message_id = %q.message_id, "Assistant: answered meanwhile");
                Verdict::Ack
            }
            Ok(_) => {
                metrics::counter!("chronicle_assistant_replies_total").increment(1);
                metrics::counter!("chronicle_assistant_tokens_total")
                    .increment(completion.total_tokens);
                tracing::info!(message_id = %q.message_id, tokens = completion.total_tokens, "Assistant replied");
                self.record_tokens(q, completion.total_tokens, limit, stop)
                    .await
            }
            Err(CommandError::Domain(e)) => {
                // the conversation or the message is gone, or the reply is not acceptable
                tracing::info!(message_id = %q.message_id, error = %e, "Assistant reply not posted");
                Verdict::Ack
            }
            Err(e) => {
                tracing::warn!(message_id = %q.message_id, error = %e, "Assistant cannot post a reply");
                Verdict::Retry(self.tuning.retry_delay(delivered))
            }
        }
    }

    /// Record the reply's tokens, retrying while PostgreSQL is away: the reply is posted,
    /// and a redelivery would not come back here (the message is answered).
    async fn record_tokens(
        &self,
        q: &Question,
        tokens: u64,
        limit: Option<u64>,
        stop: &CancellationToken,
    ) -> Verdict {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let now = self.clock.now();
        loop {
            match usage::record(&self.meters, q.owner_id, now, tokens, limit, &q.metadata).await {
                Ok((recorded, _)) => {
                    if recorded < tokens {
                        tracing::info!(message_id = %q.message_id, tokens, recorded, "The reply used more tokens than were left; counted up to the limit");
                    }
                    return Verdict::Ack;
                }
                Err(CommandError::Domain(e)) => {
                    tracing::error!(message_id = %q.message_id, error = %e, "Assistant cannot record tokens");
                    return Verdict::Ack;
                }
                Err(e) => {
                    tracing::warn!(message_id = %q.message_id, error = %e, "Assistant cannot record tokens; retrying");
                    if stop.is_cancelled() {
                        return Verdict::Ack;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }

    /// Record that the assistant gives up on the message.
    async fn fail(&self, q: &Question, reason: &str, delivered: i64) -> Verdict {
        let command = ConversationCommand::RecordAssistantFailure {
            by: q.owner_id,
            message_id: q.message_id,
            // one line, no control characters: an error text from the model's server may hold any
            reason: aggregates::text::scrub(reason)
                .replace(['\n', '\r', '\t', '\u{2028}', '\u{2029}'], " ")
                .chars()
                .take(aggregates::conversation::REASON_MAX)
                .collect(),
        };
        match self
            .conversations
            .execute(&q.conversation_id.to_string(), command, &q.metadata)
            .await
        {
            Ok(_) => {
                metrics::counter!("chronicle_assistant_failures_total").increment(1);
                tracing::info!(message_id = %q.message_id, reason, "Assistant failure recorded");
                Verdict::Ack
            }
            Err(CommandError::Domain(
                e @ (ConversationError::NotFound | ConversationError::MessageNotFound),
            )) => {
                tracing::debug!(message_id = %q.message_id, error = %e, "Assistant: nothing to record a failure on");
                Verdict::Ack
            }
            Err(CommandError::Domain(e)) => {
                tracing::error!(message_id = %q.message_id, error = %e, "Assistant cannot record a failure");
                Verdict::Ack
            }
            Err(e) => {
                tracing::warn!(message_id = %q.message_id, error = %e, "Assistant cannot record a failure; retrying");
                Verdict::Retry(self.tuning.retry_delay(delivered))
            }
        }
    }
}
