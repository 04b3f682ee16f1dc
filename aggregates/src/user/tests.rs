//! The user's rules as given/when/then.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::*;

type UserTest = TestFramework<User>;

const DEFAULT_PLAN: &str = "free";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

fn id() -> Uuid {
    Uuid::from_u128(7)
}

fn registered() -> UserEvent {
    UserEvent::UserRegistered {
        user_id: id(),
        email: "ada@example.com".into(),
        display_name: Some("Ada".into()),
        password_hash: Some("$argon2id$hash".into()),
        role: ROLE_USER.into(),
        plan: DEFAULT_PLAN.into(),
    }
}

fn verification_requested(nonce: &str, at: DateTime<Utc>) -> UserEvent {
    UserEvent::EmailVerificationRequested {
        email: "ada@example.com".into(),
        nonce: nonce.into(),
        requested_at: at,
    }
}

fn verified() -> Vec<UserEvent> {
    vec![
        registered(),
        UserEvent::EmailVerified {
            method: SecretMethod::Trusted,
            verified_at: t0(),
        },
    ]
}

fn login(ok: bool, now: DateTime<Utc>) -> UserCommand {
    UserCommand::Login {
        password_ok: ok,
        session_id: Uuid::from_u128(99),
        now,
    }
}

#[tokio::test]
async fn registering_records_the_account_and_asks_for_verification() {
    UserTest::with(UserPolicy::default())
        .given_no_previous_events()
        .when_async(UserCommand::RegisterUser {
            user_id: id(),
            email: "ada@example.com".into(),
            password_hash: Some("$argon2id$hash".into()),
            display_name: Some("Ada".into()),
            role: ROLE_USER.into(),
            plan: DEFAULT_PLAN.into(),
            verified: false,
            verification_nonce: "n1".into(),
            invitation: false,
            now: t0(),
        })
        .await
        .then_expect_events(vec![registered(), verification_requested("n1", t0())]);
}

#[tokio::test]
async fn a_trusted_registration_is_verified_at_once() {
    UserTest::with(UserPolicy::default())
        .given_no_previous_events()
        .when_async(UserCommand::RegisterUser {
            user_id: id(),
            email: "ada@example.com".into(),
            password_hash: Some("$argon2id$hash".into()),
            display_name: Some("Ada".into()),
            role: ROLE_USER.into(),
            plan: DEFAULT_PLAN.into(),
            verified: true,
            verification_nonce: "unused".into(),
            invitation: false,
            now: t0(),
        })
        .await
        .then_expect_events(verified());
}

#[tokio::test]
async fn registering_twice_is_refused() {
    UserTest::with(UserPolicy::default())
        .given(vec![registered()])
        .when_async(UserCommand::RegisterUser {
            user_id: id(),
            email: "ada@example.com".into(),
            password_hash: None,
            display_name: None,
            role: ROLE_USER.into(),
            plan: DEFAULT_PLAN.into(),
            verified: false,
            verification_nonce: "n".into(),
            invitation: false,
            now: t0(),
        })
        .await
        .then_expect_error(UserError::AlreadyRegistered);
}

#[tokio::test]
async fn a_duplicate_registration_is_recorded_with_the_owners_email() {
    UserTest::with(UserPolicy::default())
        .given(vec![registered()])
        .when_async(UserCommand::RecordDuplicateRegistration)
        .await
        .then_expect_events(vec![UserEvent::DuplicateRegistrationAttempted {
            email: "ada@example.com".into(),
        }]);
}

#[tokio::test]
async fn a_verification_link_works_once_and_only_before_it_expires() {
    let given = vec![registered(), verification_requested("n1", t0())];
    UserTest::with(UserPolicy::default())
        .given(given.clone())
        .when_async(UserCommand::VerifyEmail {
            nonce: "n1".into(),
            method: SecretMethod::Link,
            now: t0() + Duration::minutes(29),
        })
        .await
        .then_expect_events(vec![UserEvent::EmailVerified {
            method: SecretMethod::Link,
            verified_at: t0() + Duration::minutes(29),
        }]);
    UserTest::with(UserPolicy::default())
        .given(given.clone())
        .when_async(UserCommand::VerifyEmail {
            nonce: "n1".into(),
            method: SecretMethod::Link,
            now: t0() + Duration::minutes(31),
        })
        .await
        .then_expect_error(UserError::SecretExpired);
    // a newer request replaces the older link
    let mut resent = given.clone();
    resent.push(verification_requested("n2", t0()));
    UserTest::with(UserPolicy::default())
        .given(resent)
        .when_async(UserCommand::VerifyEmail {
            nonce: "n1".into(),
            method: SecretMethod::Link,
            now: t0(),
        })
        .await
        .then_expect_error(UserError::SecretInvalid);
    // used once: the account is verified
    let mut used = given;
    used.push(UserEvent::EmailVerified {
        method: SecretMethod::Link,
        verified_at: t0(),
    });
    UserTest::with(UserPolicy::default())
        .given(used)
        .when_async(UserCommand::VerifyEmail {
            nonce: "n1".into(),
            method: SecretMethod::Link,
            now: t0(),
        })
        .await
        .then_expect_error(UserError::AlreadyVerified);
}

#[tokio::test]
async fn a_code_expires_after_ten_minutes_and_allows_a_bounded_number_of_attempts() {
    let given = vec![registered(), verification_requested("n1", t0())];
    UserTest::with(UserPolicy::default())
        .given(given.clone())
        .when_async(UserCommand::VerifyEmailCode {
            code_ok: true,
            now: t0() + Duration::minutes(11),
        })
        .await
        .then_expect_error(UserError::SecretExpired);
    let mut tried: Vec<UserEvent> = given;
    for attempts in 1..=4 {
        tried.push(UserEvent::EmailVerificationCodeRejected {
            attempts,
            exhausted: false,
        });
    }
    UserTest::with(UserPolicy::default())
        .given(tried.clone())
        .when_async(UserCommand::VerifyEmailCode {
            code_ok: false,
            now: t0(),
        })
        .await
        .then_expect_events(vec![UserEvent::EmailVerificationCodeRejected {
            attempts: 5,
            exhausted: true,
        }]);
    tried.push(UserEvent::EmailVerificationCodeRejected {
        attempts: 5,
        exhausted: true,
    });
    UserTest::with(UserPolicy::default())
        .given(tried)
        .when_async(UserCommand::VerifyEmailCode {
            code_ok: true,
            now: t0(),
        })
        .await
        .then_expect_error(UserError::SecretInvalid);
}

#[tokio::test]
async fn a_wrong_password_is_counted_and_the_fifth_locks_the_account() {
    let mut given = verified();
    for attempts in 1..=4 {
        given.push(UserEvent::LoginFailed {
            attempts,
            locked_until: None,
            reason: LOGIN_FAILED_WRONG_PASSWORD.into(),
        });
    }
    UserTest::with(UserPolicy::default())
        .given(given)
        .when_async(login(false, t0()))
        .await
        .then_expect_events(vec![UserEvent::LoginFailed {
            attempts: 5,
            locked_until: Some(t0() + Duration::minutes(1)),
            reason: LOGIN_FAILED_WRONG_PASSWORD.into(),
        }]);
}

#[tokio::test]
async fn a_failed_sign_in_to_an_account_without_a_password_says_so() {
    // An email-first account: registered without a password, verified by its mail.
    let no_password = vec![
        UserEvent::UserRegistered {
            user_id: id(),
            email: "ada@example.com".into(),
            display_name: None,
            password_hash: None,
            role: ROLE_USER.into(),
            plan: DEFAULT_PLAN.into(),
        },
        UserEvent::EmailVerified {
            method: SecretMethod::Link,
            verified_at: t0(),
        },
    ];
    UserTest::with(UserPolicy::default())
        .given(no_password)
        .when_async(login(false, t0()))
        .await
        .then_expect_events(vec![UserEvent::LoginFailed {
            attempts: 1,
            locked_until: None,
            reason: LOGIN_FAILED_NO_PASSWORD.into(),
        }]);
    UserTest::with(UserPolicy::default())
        .given(verified())
        .when_async(login(false, t0()))
        .await
        .then_expect_events(vec![UserEvent::LoginFailed {
            attempts: 1,
            locked_until: None,
            reason: LOGIN_FAILED_WRONG_PASSWORD.into(),
        }]);
}

#[test]
fn login_failed_is_version_2_and_the_other_user_events_version_1() {
    use cqrs_es::DomainEvent;
    let failed = UserEvent::LoginFailed {
        attempts: 1,
        locked_until: None,
        reason: LOGIN_FAILED_WRONG_PASSWORD.into(),
    };
    assert_eq!(failed.event_version(), "2.0");
    assert_eq!(registered().event_version(), "1.0");
}

#[tokio::test]
async fn during_a_lock_even_the_right_password_is_refused_and_afterwards_it_works() {
    let mut given = verified();
    given.push(UserEvent::LoginFailed {
        attempts: 5,
        locked_until: Some(t0() + Duration::minutes(1)),
        reason: LOGIN_FAILED_WRONG_PASSWORD.into(),
    });
    UserTest::with(UserPolicy::default())
        .given(given.clone())
        .when_async(login(true, t0() + Duration::seconds(59)))
        .await
        .then_expect_error(UserError::Locked {
            until: t0() + Duration::minutes(1),
        });
    UserTest::with(UserPolicy::default())
        .given(given)
        .when_async(login(true, t0() + Duration::minutes(1)))
        .await
        .then_expect_events(vec![UserEvent::FailedLoginsCleared {
            session_id: Uuid::from_u128(99),
            at: t0() + Duration::minutes(1),
        }]);
}

#[tokio::test]
async fn a_clean_sign_in_appends_nothing_to_the_user() {
    UserTest::with(UserPolicy::default())
        .given(verified())
        .when_async(login(true, t0()))
        .await
        .then_expect_events(vec![]);
}

#[test]
fn each_lock_lasts_twice_as_long_as_the_last_up_to_the_cap() {
    let p = UserPolicy::default();
    assert_eq!(p.lock_duration(0), Duration::minutes(1));
    assert_eq!(p.lock_duration(1), Duration::minutes(2));
    assert_eq!(p.lock_duration(3), Duration::minutes(8));
    assert_eq!(p.lock_duration(30), Duration::hours(1));
}

#[tokio::test]
async fn an_unverified_account_cannot_sign_in_with_the_right_password() {
    UserTest::with(UserPolicy::default())
        .given(vec![registered(), verification_requested("n", t0())])
        .when_async(login(true, t0()))
        .await
        .then_expect_error(UserError::EmailNotVerified);
}

#[tokio::test]
async fn a_reset_link_sets_the_password_and_verifies_the_mailbox() {
    UserTest::with(UserPolicy::default())
        .given(vec![
            registered(),
            verification_requested("v", t0()),
            UserEvent::PasswordResetRequested {
                email: "ada@example.com".into(),
                nonce: "r1".into(),
                requested_at: t0(),
                invitation: false,
            },
        ])
        .when_async(UserCommand::ResetPassword {
            nonce: "r1".into(),
            password_hash: "$argon2id$new".into(),
            now: t0() + Duration::minutes(5),
        })
        .await
        .then_expect_events(vec![
            UserEvent::PasswordReset {
                email: "ada@example.com".into(),
                password_hash: "$argon2id$new".into(),
                method: SecretMethod::Link,
            },
            UserEvent::EmailVerified {
                method: SecretMethod::Link,
                verified_at: t0() + Duration::minutes(5),
            },
        ]);
}

#[tokio::test]
async fn a_profile_update_that_changes_nothing_records_nothing() {
    UserTest::with(UserPolicy::default())
        .given(vec![registered()])
        .when_async(UserCommand::UpdateProfile {
            display_name: Some("Ada".into()),
            locale: None,
            timezone: None,
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn an_erased_account_refuses_every_command() {
    let mut given = verified();
    given.push(UserEvent::UserErased {
        requested_by: "user".into(),
    });
    UserTest::with(UserPolicy::default())
        .given(given.clone())
        .when_async(login(true, t0()))
        .await
        .then_expect_error(UserError::NotRegistered);
    UserTest::with(UserPolicy::default())
        .given(given)
        .when_async(UserCommand::EraseUser {
            requested_by: "user".into(),
        })
        .await
        .then_expect_error(UserError::NotRegistered);
}

#[tokio::test]
async fn erasing_records_user_erased() {
    UserTest::with(UserPolicy::default())
        .given(verified())
        .when_async(UserCommand::EraseUser {
            requested_by: "user".into(),
        })
        .await
        .then_expect_events(vec![UserEvent::UserErased {
            requested_by: "user".into(),
        }]);
}

#[tokio::test]
async fn an_admin_changes_the_role_and_the_same_role_records_nothing() {
    UserTest::with(UserPolicy::default())
        .given(verified())
        .when_async(UserCommand::ChangeRole {
            role: ROLE_ADMIN.into(),
        })
        .await
        .then_expect_events(vec![UserEvent::RoleChanged {
            role: ROLE_ADMIN.into(),
            previous: ROLE_USER.into(),
        }]);
    UserTest::with(UserPolicy::default())
        .given(verified())
        .when_async(UserCommand::ChangeRole {
            role: ROLE_USER.into(),
        })
        .await
        .then_expect_events(vec![]);
    UserTest::with(UserPolicy::default())
        .given(verified())
        .when_async(UserCommand::ChangeRole {
            role: "root".into(),
        })
        .await
        .then_expect_error(UserError::Invalid {
            field: "role",
            message: "must be user or admin",
        });
}

#[tokio::test]
async fn a_deactivated_user_cannot_sign_in_until_reactivated() {
    let mut given = verified();
    given.push(UserEvent::UserDeactivated {
        reason: Some("abuse".into()),
    });
    UserTest::with(UserPolicy::default())
        .given(given.clone())
        .when_async(login(true, t0()))
        .await
        .then_expect_error(UserError::Disabled);
    UserTest::with(UserPolicy::default())
        .given(given.clone())
        .when_async(UserCommand::Deactivate { reason: None })
        .await
        .then_expect_events(vec![]);
    UserTest::with(UserPolicy::default())
        .given(given.clone())
        .when_async(UserCommand::Reactivate)
        .await
        .then_expect_events(vec![UserEvent::UserReactivated {}]);
    given.push(UserEvent::UserReactivated {});
    UserTest::with(UserPolicy::default())
        .given(given)
        .when_async(login(true, t0()))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_new_email_must_be_verified_again() {
    UserTest::with(UserPolicy::default())
        .given(verified())
        .when_async(UserCommand::ChangeEmail {
            email: "ada@new.example".into(),
            nonce: "n2".into(),
            now: t0(),
        })
        .await
        .then_expect_events(vec![
            UserEvent::EmailChanged {
                email: "ada@new.example".into(),
            },
            verification_requested_to("ada@new.example", "n2", t0()),
        ]);
    let mut given = verified();
    given.push(UserEvent::EmailChanged {
        email: "ada@new.example".into(),
    });
    UserTest::with(UserPolicy::default())
        .given(given)
        .when_async(login(true, t0()))
        .await
        .then_expect_error(UserError::EmailNotVerified);
}

fn verification_requested_to(email: &str, nonce: &str, at: DateTime<Utc>) -> UserEvent {
    UserEvent::EmailVerificationRequested {
        email: email.into(),
        nonce: nonce.into(),
        requested_at: at,
    }
}

#[tokio::test]
async fn an_invitation_link_works_for_days_where_a_reset_link_expires() {
    let requested = |invitation| UserEvent::PasswordResetRequested {
        email: "ada@example.com".into(),
        nonce: "i1".into(),
        requested_at: t0(),
        invitation,
    };
    let reset = |now| UserCommand::ResetPassword {
        nonce: "i1".into(),
        password_hash: "$argon2id$first".into(),
        now,
    };
    let three_days = t0() + Duration::days(3);
    UserTest::with(UserPolicy::default())
        .given(vec![registered(), requested(true)])
        .when_async(reset(three_days))
        .await
        .then_expect_events(vec![
            UserEvent::PasswordReset {
                email: "ada@example.com".into(),
                password_hash: "$argon2id$first".into(),
                method: SecretMethod::Link,
            },
            UserEvent::EmailVerified {
                method: SecretMethod::Link,
                verified_at: three_days,
            },
        ]);
    UserTest::with(UserPolicy::default())
        .given(vec![registered(), requested(false)])
        .when_async(reset(three_days))
        .await
        .then_expect_error(UserError::SecretExpired);
    UserTest::with(UserPolicy::default())
        .given(vec![registered(), requested(true)])
        .when_async(reset(t0() + Duration::days(8)))
        .await
        .then_expect_error(UserError::SecretExpired);
}

#[tokio::test]
async fn an_invited_user_gets_one_mail_to_choose_a_password_and_no_verification_mail() {
    UserTest::with(UserPolicy::default())
        .given_no_previous_events()
        .when_async(UserCommand::RegisterUser {
            user_id: id(),
            email: "ada@example.com".into(),
            password_hash: None,
            display_name: Some("Ada".into()),
            role: ROLE_USER.into(),
            plan: DEFAULT_PLAN.into(),
            verified: false,
            verification_nonce: "n1".into(),
            invitation: true,
            now: t0(),
        })
        .await
        .then_expect_events(vec![
            UserEvent::UserRegistered {
                user_id: id(),
                email: "ada@example.com".into(),
                display_name: Some("Ada".into()),
                password_hash: None,
                role: ROLE_USER.into(),
                plan: DEFAULT_PLAN.into(),
            },
            UserEvent::PasswordResetRequested {
                email: "ada@example.com".into(),
                nonce: "n1".into(),
                requested_at: t0(),
                invitation: true,
            },
        ]);
}
