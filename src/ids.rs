//! Typed identifiers, so a case id can never be passed where a user id is expected.
//!
//! All ids are UUIDv7: time-ordered, so primary-key indexes stay append-mostly.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}

id_type!(
    /// A law firm: the tenant boundary.
    FirmId,
    /// A person who logs in.
    UserId,
    /// One login: the family of refresh tokens it has rotated through.
    SessionId,
    /// A matter.
    CaseId,
    /// A party to a case.
    PartyId,
    /// An entry of a case's docket.
    DocketEntryId,
    /// A document of a case (its versions share it).
    DocumentId,
    /// A tus upload.
    UploadId,
    /// A calendar event.
    CalendarEventId,
);
