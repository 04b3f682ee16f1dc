//! The user's decisions about the account itself: the profile and avatar, the email's
//! change, and what an admin decides (plan, role, deactivation, erasure).

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;

use super::{check_email, check_profile_field, User, UserError, UserEvent, ROLE_ADMIN, ROLE_USER};

impl User {
    pub(super) async fn update_profile(
        &mut self,
        display_name: Option<String>,
        locale: Option<String>,
        timezone: Option<String>,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        check_profile_field(&display_name, "display_name", 100)?;
        check_profile_field(&locale, "locale", 35)?;
        check_profile_field(&timezone, "timezone", 64)?;
        if display_name == self.display_name && locale == self.locale && timezone == self.timezone {
            return Ok(()); // nothing changes: no event
        }
        sink.write(
            UserEvent::ProfileUpdated {
                display_name,
                locale,
                timezone,
            },
            self,
        )
        .await;
        Ok(())
    }

    pub(super) async fn change_avatar(
        &mut self,
        content_type: String,
        sha256: String,
        size: u64,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        sink.write(
            UserEvent::AvatarChanged {
                content_type,
                sha256,
                size,
            },
            self,
        )
        .await;
        Ok(())
    }

    /// A new address (claimed by the write side) is unverified until its owner proves it.
    pub(super) async fn change_email(
        &mut self,
        email: String,
        nonce: String,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        check_email(&email)?;
        if email == self.email {
            return Ok(());
        }
        sink.write(
            UserEvent::EmailChanged {
                email: email.clone(),
            },
            self,
        )
        .await;
        sink.write(
            UserEvent::EmailVerificationRequested {
                email,
                nonce,
                requested_at: now,
            },
            self,
        )
        .await;
        Ok(())
    }

    pub(super) async fn change_plan(
        &mut self,
        plan: String,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        if plan != self.plan {
            let previous = self.plan.clone();
            sink.write(UserEvent::PlanChanged { plan, previous }, self)
                .await;
        }
        Ok(())
    }

    pub(super) async fn change_role(
        &mut self,
        role: String,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        if role != ROLE_USER && role != ROLE_ADMIN {
            return Err(UserError::Invalid {
                field: "role",
                message: "must be user or admin",
            });
        }
        if role != self.role {
            let previous = self.role.clone();
            sink.write(UserEvent::RoleChanged { role, previous }, self)
                .await;
        }
        Ok(())
    }

    pub(super) async fn deactivate(
        &mut self,
        reason: Option<String>,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        check_profile_field(&reason, "reason", 500)?;
        if !self.disabled {
            sink.write(UserEvent::UserDeactivated { reason }, self)
                .await;
        }
        Ok(())
    }

    pub(super) async fn reactivate(&mut self, sink: &EventSink<Self>) -> Result<(), UserError> {
        self.must_exist()?;
        if self.disabled {
            sink.write(UserEvent::UserReactivated {}, self).await;
        }
        Ok(())
    }

    pub(super) async fn erase(
        &mut self,
        requested_by: String,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        sink.write(UserEvent::UserErased { requested_by }, self)
            .await;
        Ok(())
    }
}
