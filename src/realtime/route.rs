//! Where a committed domain event goes: which Socket.IO event it becomes, which rooms receive
//! it, and what it changes in who follows what. Pure: the feed applies the plan, and a replay
//! asks the same plan whether a socket would have received an event.
//!
//! Rooms (all in the `/events` namespace, all local to an instance; see `docs/REALTIME.md`):
//! - `user:<id>`, `session:<id>`, `firm:<id>`: every socket, from its handshake;
//! - `firm:<id>:all-cases`: sockets of users who see every case of the firm (admins, partners);
//! - `case:<id>`: sockets that subscribed to a case they may see;
//! - `case:<id>:clients`: those of them whose place on the team is "client" (never sent
//!   restricted material);
//! - `case:<id>:sealed`: those who may see the case's sealed material (admins, grant holders).

use serde_json::{Value, json};
use uuid::Uuid;

use crate::events::{DomainEvent, EventType};

/// Every room of a user's sockets.
pub fn user_room(user: Uuid) -> String {
    format!("user:{user}")
}

/// Every socket of one session.
pub fn session_room(session: Uuid) -> String {
    format!("session:{session}")
}

/// Every socket of a firm.
pub fn firm_room(firm: Uuid) -> String {
    format!("firm:{firm}")
}

/// Sockets of the firm's users who see every case.
pub fn all_cases_room(firm: Uuid) -> String {
    format!("firm:{firm}:all-cases")
}

/// Sockets following a case.
pub fn case_room(case: Uuid) -> String {
    format!("case:{case}")
}

/// Sockets following a case whose user is a client on its team.
pub fn case_clients_room(case: Uuid) -> String {
    format!("case:{case}:clients")
}

/// Sockets following a case whose user may see its sealed material.
pub fn case_sealed_room(case: Uuid) -> String {
    format!("case:{case}:sealed")
}

/// Every room a case subscription may have put a socket in.
pub fn case_rooms(case: Uuid) -> [String; 3] {
    [case_room(case), case_clients_room(case), case_sealed_room(case)]
}

/// One emission: the Socket.IO event, its payload's `data`, and its audience (sockets in any of
/// `to` and in none of `except`).
#[derive(Clone, Debug, PartialEq)]
pub struct Emit {
    pub event: &'static str,
    pub data: Value,
    pub to: Vec<String>,
    pub except: Vec<String>,
}

impl Emit {
    /// Whether a socket in `rooms` is in the audience.
    pub fn reaches(&self, rooms: &[String]) -> bool {
        self.to.iter().any(|r| rooms.contains(r)) && !self.except.iter().any(|r| rooms.contains(r))
    }
}

/// What an event does to the gateway.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send it.
    Emit(Emit),
    /// The user no longer sees the case (unless they see every case): their sockets leave its rooms.
    LeaveCase { user: Uuid, case: Uuid },
    /// The user's sealed-access grant for the case was given or taken away.
    SealedAccess { user: Uuid, case: Uuid, granted: bool },
    /// The case is gone: every socket leaves its rooms.
    CaseGone(Uuid),
    /// Close every socket in the room (a revoked session, a disabled user, a changed role —
    /// the last so that the client reconnects with its new rights).
    Disconnect(String),
}

/// The user an event's `data.userId` names.
fn data_user(e: &DomainEvent) -> Option<Uuid> {
    e.data.get("userId").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok())
}

/// The audience of an event about material of a case: its followers, only those with sealed
/// access for sealed material, never clients for restricted material.
fn case_material(e: &DomainEvent, case: Uuid, event: &'static str) -> Emit {
    let to = if e.sealed { vec![case_sealed_room(case)] } else { vec![case_room(case)] };
    let except = if e.restricted { vec![case_clients_room(case)] } else { Vec::new() };
    Emit { event, data: e.data.clone(), to, except }
}

/// The users a firm calendar event's view names: creator, assignee, attendees.
fn calendar_people(data: &Value) -> Vec<Uuid> {
    let id = |v: Option<&Value>| v.and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok());
    let mut out: Vec<Uuid> = [id(data.get("createdBy")), id(data.get("assigneeId"))].into_iter().flatten().collect();
    if let Some(list) = data.get("attendees").and_then(Value::as_array) {
        out.extend(list.iter().filter_map(|a| id(a.get("userId"))));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The plan for one committed event, in the order it is carried out.
pub fn plan(e: &DomainEvent) -> Vec<Action> {
    use EventType::*;
    let firm = e.firm_id.0;
    match (e.event_type, e.case_id) {
        (CaseCreated | CaseUpdated | CaseDeleted, Some(case)) => {
            let event = match e.event_type {
                CaseCreated => "case:created",
                CaseUpdated => "case:updated",
                _ => "case:deleted",
            };
            let mut to = vec![all_cases_room(firm), case_room(case)];
            // Whoever created a case sees it (they lead it or were put on it).
            if e.event_type == CaseCreated
                && let Some(actor) = e.actor.id
            {
                to.push(user_room(actor));
            }
            let mut actions = vec![Action::Emit(Emit { event, data: e.data.clone(), to, except: Vec::new() })];
            if e.event_type == CaseDeleted {
                actions.push(Action::CaseGone(case));
            }
            actions
        }
        (DocketEntryCreated | DocketEntryUpdated | DocketEntryDeleted, Some(case)) => {
            let event = match e.event_type {
                DocketEntryCreated => "docket:entry:added",
                DocketEntryUpdated => "docket:entry:updated",
                _ => "docket:entry:deleted",
            };
            vec![Action::Emit(case_material(e, case, event))]
        }
        (PartyCreated | PartyUpdated | PartyDeleted, Some(case)) => {
            let event = match e.event_type {
                PartyCreated => "party:created",
                PartyUpdated => "party:updated",
                _ => "party:deleted",
            };
            vec![Action::Emit(case_material(e, case, event))]
        }
        (DocumentUploaded | DocumentProcessed | DocumentUpdated | DocumentDeleted, Some(case)) => {
            let event = match e.event_type {
                DocumentUploaded => "document:uploaded",
                DocumentProcessed => "document:processed",
                DocumentUpdated => "document:updated",
                _ => "document:deleted",
            };
            vec![Action::Emit(case_material(e, case, event))]
        }
        (CalendarEventCreated | CalendarEventUpdated | CalendarEventDeleted, case) => {
            let mut data = e.data.clone();
            let change = match e.event_type {
                CalendarEventCreated => "created",
                CalendarEventUpdated => "updated",
                _ => "deleted",
            };
            if let Value::Object(o) = &mut data {
                o.insert("change".into(), Value::String(change.into()));
            }
            match case {
                Some(case) => {
                    let mut emit = case_material(e, case, "calendar:event:changed");
                    emit.data = data;
                    vec![Action::Emit(emit)]
                }
                // A firm event: its people, and the firm's users who see everything.
                None => {
                    let mut to = vec![all_cases_room(firm)];
                    to.extend(calendar_people(&e.data).into_iter().map(user_room));
                    vec![Action::Emit(Emit { event: "calendar:event:changed", data, to, except: Vec::new() })]
                }
            }
        }
        // A reminder goes to users checked when it was sent; one whose deadline's entry was
        // sealed or restricted since (`docket::ops::confide_past_events`) is not replayed.
        (CalendarEventReminder, _) if e.sealed || e.restricted => Vec::new(),
        (CalendarEventReminder, _) => {
            let to: Vec<String> = e
                .data
                .get("userIds")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter().filter_map(Value::as_str).filter_map(|s| Uuid::parse_str(s).ok()).map(user_room).collect()
                })
                .unwrap_or_default();
            if to.is_empty() {
                return Vec::new();
            }
            let mut data = e.data.clone();
            if let Value::Object(o) = &mut data {
                o.remove("userIds");
                o.insert("kind".into(), Value::String("calendar.reminder".into()));
            }
            vec![Action::Emit(Emit { event: "notification", data, to, except: Vec::new() })]
        }
        (TeamMemberAdded, Some(case)) => match data_user(e) {
            Some(user) => vec![Action::Emit(Emit {
                event: "notification",
                data: json!({ "kind": "case.team_added", "caseId": case, "role": e.data.get("role") }),
                to: vec![user_room(user)],
                except: Vec::new(),
            })],
            None => Vec::new(),
        },
        (TeamMemberRemoved, Some(case)) => match data_user(e) {
            Some(user) => vec![
                Action::LeaveCase { user, case },
                Action::Emit(Emit {
                    event: "notification",
                    data: json!({ "kind": "case.team_removed", "caseId": case }),
                    to: vec![user_room(user)],
                    except: Vec::new(),
                }),
            ],
            None => Vec::new(),
        },
        (CaseAccessChanged, Some(case)) => match (data_user(e), e.data.get("sealedAccess").and_then(Value::as_bool)) {
            (Some(user), Some(granted)) => vec![Action::SealedAccess { user, case, granted }],
            _ => Vec::new(),
        },
        (UserDisabled | UserRoleChanged, _) => match Uuid::parse_str(&e.entity_id) {
            Ok(user) => vec![Action::Disconnect(user_room(user))],
            Err(_) => Vec::new(),
        },
        (WebhookDisabled, _) => vec![Action::Emit(Emit {
            event: "notification",
            data: json!({ "kind": "webhook.disabled", "webhook": e.data }),
            to: vec![all_cases_room(firm)],
            except: Vec::new(),
        })],
        (SessionRevoked, _) => match Uuid::parse_str(&e.entity_id) {
            Ok(session) => vec![Action::Disconnect(session_room(session))],
            Err(_) => Vec::new(),
        },
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        audit::Actor,
        ids::{FirmId, UserId},
    };

    fn event(t: EventType, case: Uuid) -> DomainEvent {
        let actor = Actor::system();
        DomainEvent::new(t, FirmId(Uuid::now_v7()), &actor, Uuid::now_v7()).case(case)
    }

    fn emits(e: &DomainEvent) -> Vec<Emit> {
        plan(e)
            .into_iter()
            .filter_map(|a| match a {
                Action::Emit(x) => Some(x),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn sealed_docket_entries_reach_only_the_sealed_room_and_restricted_ones_no_client() {
        let case = Uuid::now_v7();
        let follower = vec![case_room(case)];
        let client = vec![case_room(case), case_clients_room(case)];
        let sealed = vec![case_room(case), case_sealed_room(case)];

        let open = &emits(&event(EventType::DocketEntryCreated, case))[0];
        assert_eq!(open.event, "docket:entry:added");
        assert!(open.reaches(&follower) && open.reaches(&client) && open.reaches(&sealed));

        let e = event(EventType::DocketEntryCreated, case).confidential(true, false);
        let s = &emits(&e)[0];
        assert!(!s.reaches(&follower) && !s.reaches(&client) && s.reaches(&sealed));

        let e = event(EventType::DocketEntryUpdated, case).confidential(false, true);
        let r = &emits(&e)[0];
        assert!(r.reaches(&follower) && !r.reaches(&client) && r.reaches(&sealed));

        // Documents follow the same rules.
        let d = &emits(&event(EventType::DocumentUploaded, case))[0];
        assert_eq!(d.event, "document:uploaded");
        assert!(d.reaches(&follower) && d.reaches(&client));
        let d = &emits(&event(EventType::DocumentProcessed, case).confidential(true, false))[0];
        assert_eq!(d.event, "document:processed");
        assert!(!d.reaches(&follower) && !d.reaches(&client) && d.reaches(&sealed));
        let d = &emits(&event(EventType::DocumentDeleted, case).confidential(false, true))[0];
        assert!(d.reaches(&follower) && !d.reaches(&client));
    }

    #[test]
    fn calendar_changes_reach_who_sees_the_event_and_reminders_only_their_recipients() {
        let case = Uuid::now_v7();
        let e = event(EventType::CalendarEventUpdated, case).data(json!({ "id": "x", "title": "Hearing" }));
        let x = &emits(&e)[0];
        assert_eq!(x.event, "calendar:event:changed");
        assert_eq!(x.data["change"], "updated");
        assert!(x.reaches(&[case_room(case)]) && !x.reaches(&[firm_room(e.firm_id.0)]));
        // Computed from a sealed docket entry: the sealed room only.
        let sealed = event(EventType::CalendarEventCreated, case).confidential(true, false);
        let s = &emits(&sealed)[0];
        assert!(!s.reaches(&[case_room(case)]) && s.reaches(&[case_sealed_room(case)]));
        // A firm event: its creator, assignee and attendees, and those who see everything.
        let (creator, attendee, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let firm_event = DomainEvent::new(EventType::CalendarEventCreated, FirmId(Uuid::now_v7()), &Actor::system(), "e")
            .data(json!({ "createdBy": creator, "assigneeId": null, "attendees": [{ "userId": attendee }, { "email": "a@b.c" }] }));
        let f = &emits(&firm_event)[0];
        assert!(f.reaches(&[user_room(creator)]) && f.reaches(&[user_room(attendee)]));
        assert!(f.reaches(&[all_cases_room(firm_event.firm_id.0)]) && !f.reaches(&[user_room(other)]));
        // A reminder: a notification to its recipients, without the recipient list.
        let reminder =
            DomainEvent::new(EventType::CalendarEventReminder, FirmId(Uuid::now_v7()), &Actor::system(), "e")
                .data(json!({ "eventId": "e", "title": "Call", "userIds": [attendee] }));
        let r = &emits(&reminder)[0];
        assert_eq!(r.event, "notification");
        assert_eq!(r.data["kind"], "calendar.reminder");
        assert!(r.data.get("userIds").is_none());
        assert!(r.reaches(&[user_room(attendee)]) && !r.reaches(&[user_room(creator)]));
    }

    #[test]
    fn case_events_reach_the_firms_privileged_users_and_the_cases_followers() {
        let case = Uuid::now_v7();
        let e = event(EventType::CaseUpdated, case);
        let x = &emits(&e)[0];
        assert!(x.reaches(&[all_cases_room(e.firm_id.0)]));
        assert!(x.reaches(&[case_room(case)]));
        assert!(!x.reaches(&[firm_room(e.firm_id.0)]), "a firm member who may not see the case");
        assert!(!x.reaches(&[all_cases_room(Uuid::now_v7())]), "another firm");
        let gone = plan(&event(EventType::CaseDeleted, case));
        assert_eq!(gone.last(), Some(&Action::CaseGone(case)));
    }

    #[test]
    fn losing_access_is_planned_before_the_notification() {
        let case = Uuid::now_v7();
        let user = UserId(Uuid::now_v7());
        let e = event(EventType::TeamMemberRemoved, case).data(json!({ "caseId": case, "userId": user }));
        let p = plan(&e);
        assert_eq!(p[0], Action::LeaveCase { user: user.0, case });
        let e = event(EventType::CaseAccessChanged, case).data(json!({ "userId": user, "sealedAccess": false }));
        assert_eq!(plan(&e), vec![Action::SealedAccess { user: user.0, case, granted: false }]);
        let e = DomainEvent::new(EventType::SessionRevoked, FirmId(Uuid::now_v7()), &Actor::system(), user.0);
        assert_eq!(plan(&e), vec![Action::Disconnect(session_room(user.0))]);
    }
}
