use cqrs_es::test::TestFramework;

use super::*;

fn owner() -> Uuid {
    Uuid::from_u128(1)
}

#[test]
fn titles_and_messages_with_control_characters_are_refused() {
    // the CLI and the workers do not pass the HTTP edge: the aggregate is the last word
    for title in ["nul\u{0}", "two\nlines", "esc\u{1b}"] {
        TestFramework::<Conversation>::with(())
            .given_no_previous_events()
            .when(ConversationCommand::StartConversation {
                owner_id: owner(),
                title: title.into(),
            })
            .then_expect_error(ConversationError::Invalid {
                field: "title",
                message: crate::text::FORBIDDEN_IN_LINE_MESSAGE,
            });
    }
    TestFramework::<Conversation>::with(())
        .given(vec![started()])
        .when(ConversationCommand::PostMessage {
            by: owner(),
            message_id: Uuid::from_u128(7),
            role: ROLE_USER.into(),
            content: "a\u{0}b".into(),
            in_reply_to: None,
        })
        .then_expect_error(ConversationError::Invalid {
            field: "content",
            message: crate::text::FORBIDDEN_MESSAGE,
        });
    TestFramework::<Conversation>::with(())
        .given(vec![started()])
        .when(ConversationCommand::PostMessage {
            by: owner(),
            message_id: Uuid::from_u128(7),
            role: ROLE_USER.into(),
            content: "two\nlines\tare fine".into(),
            in_reply_to: None,
        })
        .then_expect_events(vec![ConversationEvent::MessagePosted {
            owner_id: owner(),
            message_id: Uuid::from_u128(7),
            role: ROLE_USER.into(),
            content: "two\nlines\tare fine".into(),
            in_reply_to: None,
        }]);
}

fn started() -> ConversationEvent {
    ConversationEvent::ConversationStarted {
        owner_id: owner(),
        title: "Plans".into(),
    }
}

fn post(by: Uuid, id: u128) -> ConversationCommand {
    ConversationCommand::PostMessage {
        by,
        message_id: Uuid::from_u128(id),
        role: ROLE_USER.into(),
        content: "hello".into(),
        in_reply_to: None,
    }
}

#[tokio::test]
async fn the_owner_posts_a_message() {
    TestFramework::<Conversation>::with(())
        .given(vec![started()])
        .when_async(post(owner(), 10))
        .await
        .then_expect_events(vec![ConversationEvent::MessagePosted {
            owner_id: owner(),
            message_id: Uuid::from_u128(10),
            role: ROLE_USER.into(),
            content: "hello".into(),
            in_reply_to: None,
        }]);
}

#[tokio::test]
async fn someone_else_finds_nothing() {
    TestFramework::<Conversation>::with(())
        .given(vec![started()])
        .when_async(post(Uuid::from_u128(2), 10))
        .await
        .then_expect_error(ConversationError::NotFound);
}

#[tokio::test]
async fn posting_the_same_message_again_changes_nothing() {
    let mut given = vec![started()];
    given.push(ConversationEvent::MessagePosted {
        owner_id: owner(),
        message_id: Uuid::from_u128(10),
        role: ROLE_USER.into(),
        content: "hello".into(),
        in_reply_to: None,
    });
    TestFramework::<Conversation>::with(())
        .given(given)
        .when_async(post(owner(), 10))
        .await
        .then_expect_events(vec![]);
}

fn asked(id: u128) -> ConversationEvent {
    ConversationEvent::MessagePosted {
        owner_id: owner(),
        message_id: Uuid::from_u128(id),
        role: ROLE_USER.into(),
        content: "what is 2 + 2?".into(),
        in_reply_to: None,
    }
}

fn reply_event(to: u128, id: Uuid) -> ConversationEvent {
    ConversationEvent::MessagePosted {
        owner_id: owner(),
        message_id: id,
        role: ROLE_ASSISTANT.into(),
        content: "4".into(),
        in_reply_to: Some(Uuid::from_u128(to)),
    }
}

fn reply(to: u128, id: Uuid) -> ConversationCommand {
    ConversationCommand::PostMessage {
        by: owner(),
        message_id: id,
        role: ROLE_ASSISTANT.into(),
        content: "4".into(),
        in_reply_to: Some(Uuid::from_u128(to)),
    }
}

fn failure(of: u128) -> ConversationCommand {
    ConversationCommand::RecordAssistantFailure {
        by: owner(),
        message_id: Uuid::from_u128(of),
        reason: "tokens limit reached".into(),
    }
}

fn failed(of: u128) -> ConversationEvent {
    ConversationEvent::AssistantFailed {
        owner_id: owner(),
        message_id: Uuid::from_u128(of),
        reason: "tokens limit reached".into(),
    }
}

#[test]
fn the_reply_id_is_derived_from_the_message_and_stable() {
    let m = Uuid::from_u128(10);
    assert_eq!(reply_id(m), reply_id(m));
    assert_ne!(reply_id(m), reply_id(Uuid::from_u128(11)));
    assert_ne!(reply_id(m), m);
    // fixed for ever: replies already in logs were given these ids
    assert_eq!(
        reply_id(Uuid::nil()),
        Uuid::new_v5(
            &Uuid::from_u128(0x6c1d_5e0a_93b4_4f8e_a2d7_0f51_c8e3_9b24),
            Uuid::nil().as_bytes()
        )
    );
}

#[tokio::test]
async fn the_assistant_answers_a_user_message() {
    TestFramework::<Conversation>::with(())
        .given(vec![started(), asked(10)])
        .when_async(reply(10, reply_id(Uuid::from_u128(10))))
        .await
        .then_expect_events(vec![reply_event(10, reply_id(Uuid::from_u128(10)))]);
}

#[tokio::test]
async fn the_same_reply_posted_again_changes_nothing() {
    let id = reply_id(Uuid::from_u128(10));
    TestFramework::<Conversation>::with(())
        .given(vec![started(), asked(10), reply_event(10, id)])
        .when_async(reply(10, id))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_second_reply_to_the_same_message_under_another_id_changes_nothing() {
    TestFramework::<Conversation>::with(())
        .given(vec![
            started(),
            asked(10),
            reply_event(10, Uuid::from_u128(20)),
        ])
        .when_async(reply(10, Uuid::from_u128(21)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn no_reply_comes_after_a_recorded_failure() {
    TestFramework::<Conversation>::with(())
        .given(vec![started(), asked(10), failed(10)])
        .when_async(reply(10, reply_id(Uuid::from_u128(10))))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_reply_must_answer_a_user_message_of_the_conversation() {
    TestFramework::<Conversation>::with(())
        .given(vec![started()])
        .when_async(reply(10, Uuid::from_u128(20)))
        .await
        .then_expect_error(ConversationError::MessageNotFound);
    let id = Uuid::from_u128(20);
    TestFramework::<Conversation>::with(())
        .given(vec![started(), asked(10), reply_event(10, id)])
        .when_async(ConversationCommand::PostMessage {
            by: owner(),
            message_id: Uuid::from_u128(30),
            role: ROLE_ASSISTANT.into(),
            content: "answering myself".into(),
            in_reply_to: Some(id),
        })
        .await
        .then_expect_error(ConversationError::Invalid {
            field: "in_reply_to",
            message: "the assistant answers user messages only",
        });
}

#[tokio::test]
async fn only_user_and_assistant_messages_are_posted() {
    TestFramework::<Conversation>::with(())
        .given(vec![started()])
        .when_async(ConversationCommand::PostMessage {
            by: owner(),
            message_id: Uuid::from_u128(10),
            role: ROLE_ASSISTANT_ERROR.into(),
            content: "boom".into(),
            in_reply_to: None,
        })
        .await
        .then_expect_error(ConversationError::Invalid {
            field: "role",
            message: "must be user or assistant",
        });
}

#[tokio::test]
async fn the_assistant_records_a_failure() {
    TestFramework::<Conversation>::with(())
        .given(vec![started(), asked(10)])
        .when_async(failure(10))
        .await
        .then_expect_events(vec![failed(10)]);
}

#[tokio::test]
async fn a_failure_after_a_reply_or_a_failure_changes_nothing() {
    TestFramework::<Conversation>::with(())
        .given(vec![
            started(),
            asked(10),
            reply_event(10, reply_id(Uuid::from_u128(10))),
        ])
        .when_async(failure(10))
        .await
        .then_expect_events(vec![]);
    TestFramework::<Conversation>::with(())
        .given(vec![started(), asked(10), failed(10)])
        .when_async(failure(10))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_failure_names_a_user_message_and_a_reason() {
    TestFramework::<Conversation>::with(())
        .given(vec![started()])
        .when_async(failure(10))
        .await
        .then_expect_error(ConversationError::MessageNotFound);
    TestFramework::<Conversation>::with(())
        .given(vec![started(), asked(10)])
        .when_async(ConversationCommand::RecordAssistantFailure {
            by: owner(),
            message_id: Uuid::from_u128(10),
            reason: " ".into(),
        })
        .await
        .then_expect_error(ConversationError::Invalid {
            field: "reason",
            message: "must not be empty, nor longer than allowed",
        });
    TestFramework::<Conversation>::with(())
        .given(vec![started(), asked(10)])
        .when_async(ConversationCommand::RecordAssistantFailure {
            by: Uuid::from_u128(2),
            message_id: Uuid::from_u128(10),
            reason: "tokens limit reached".into(),
        })
        .await
        .then_expect_error(ConversationError::NotFound);
}

#[tokio::test]
async fn an_exchange_posts_the_prompt_and_its_reply_together() {
    let prompt_id = Uuid::from_u128(10);
    let exchange = ConversationCommand::PostExchange {
        by: owner(),
        prompt_id,
        prompt: "what is 2 + 2?".into(),
        reply_id: reply_id(prompt_id),
        reply: "4".into(),
    };
    TestFramework::<Conversation>::with(())
        .given(vec![started()])
        .when_async(exchange.clone())
        .await
        .then_expect_events(vec![asked(10), reply_event(10, reply_id(prompt_id))]);
    TestFramework::<Conversation>::with(())
        .given(vec![
            started(),
            asked(10),
            reply_event(10, reply_id(prompt_id)),
        ])
        .when_async(exchange)
        .await
        .then_expect_events(vec![]);
}

#[test]
fn replies_and_failures_mark_the_message_answered() {
    let mut c = Conversation::default();
    for e in [
        started(),
        asked(10),
        asked(11),
        reply_event(10, Uuid::from_u128(20)),
        failed(11),
    ] {
        c.apply(e);
    }
    assert!(c.is_answered(Uuid::from_u128(10)));
    assert!(c.is_answered(Uuid::from_u128(11)));
    assert!(!c.is_answered(Uuid::from_u128(20)));
}

#[tokio::test]
async fn a_deleted_conversation_is_gone() {
    TestFramework::<Conversation>::with(())
        .given(vec![
            started(),
            ConversationEvent::ConversationDeleted { owner_id: owner() },
        ])
        .when_async(post(owner(), 10))
        .await
        .then_expect_error(ConversationError::NotFound);
}
