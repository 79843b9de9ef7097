//! Documents: a case's files, each with numbered versions.
//!
//! A version is made from a finished upload (see `uploads`), whose content-addressed blob it
//! takes over. Version numbers are 1, 2, 3… per document, gapless however many clients post
//! at once. Access follows the case: a user who cannot see the case cannot see its documents
//! (404), sealed documents exist only for users with sealed access, restricted ones are hidden
//! from clients. A legal hold blocks deleting the document and any of its versions. Downloads
//! are audited, honour `Range`, and never serve an infected file.

pub mod http;
pub mod model;
pub mod ops;
pub mod process;
pub mod thumbnail;
