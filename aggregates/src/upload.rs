//! The `upload` aggregate: one file a user stored, keyed by the upload id. The bytes live
//! under the data directory, content-addressed; the log records who stored what, when.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const AGGREGATE_TYPE: &str = "upload";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum UploadEvent {
    UploadStored {
        owner_id: Uuid,
        /// The name the user gave it (personal data: sealed in the log).
        filename: String,
        content_type: String,
        size: u64,
        sha256: String,
    },
    UploadDeleted {
        owner_id: Uuid,
    },
}

impl DomainEvent for UploadEvent {
    fn event_type(&self) -> String {
        match self {
            UploadEvent::UploadStored { .. } => "UploadStored",
            UploadEvent::UploadDeleted { .. } => "UploadDeleted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum UploadCommand {
    StoreUpload {
        owner_id: Uuid,
        filename: String,
        content_type: String,
        size: u64,
        sha256: String,
    },
    DeleteUpload {
        by: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error("no such upload")]
    NotFound,
    #[error("the upload exists already")]
    AlreadyStored,
    /// A file name or content type that is not one clean line (see `crate::text`).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: &'static str,
    },
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upload {
    pub owner_id: Option<Uuid>,
    pub deleted: bool,
}

impl Aggregate for Upload {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = UploadCommand;
    type Event = UploadEvent;
    type Error = UploadError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            UploadCommand::StoreUpload {
                owner_id,
                filename,
                content_type,
                size,
                sha256,
            } => {
                if self.owner_id.is_some() {
                    return Err(UploadError::AlreadyStored);
                }
                for (field, value) in [("filename", &filename), ("content_type", &content_type)] {
                    crate::text::check_line(value)
                        .map_err(|message| UploadError::Invalid { field, message })?;
                }
                sink.write(
                    UploadEvent::UploadStored {
                        owner_id,
                        filename,
                        content_type,
                        size,
                        sha256,
                    },
                    self,
                )
                .await;
            }
            UploadCommand::DeleteUpload { by } => match self.owner_id {
                Some(owner) if owner == by && !self.deleted => {
                    sink.write(UploadEvent::UploadDeleted { owner_id: owner }, self)
                        .await;
                }
                _ => return Err(UploadError::NotFound),
            },
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UploadEvent::UploadStored { owner_id, .. } => self.owner_id = Some(owner_id),
            UploadEvent::UploadDeleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    #[tokio::test]
    async fn only_the_owner_deletes_an_upload() {
        let stored = UploadEvent::UploadStored {
            owner_id: Uuid::from_u128(1),
            filename: "a.txt".into(),
            content_type: "text/plain".into(),
            size: 3,
            sha256: "ab".into(),
        };
        TestFramework::<Upload>::with(())
            .given(vec![stored.clone()])
            .when_async(UploadCommand::DeleteUpload {
                by: Uuid::from_u128(2),
            })
            .await
            .then_expect_error(UploadError::NotFound);
        TestFramework::<Upload>::with(())
            .given(vec![stored])
            .when_async(UploadCommand::DeleteUpload {
                by: Uuid::from_u128(1),
            })
            .await
            .then_expect_events(vec![UploadEvent::UploadDeleted {
                owner_id: Uuid::from_u128(1),
            }]);
    }
}
