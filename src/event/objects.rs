//! The normalized objects of a record: visitor, chat, offline message, wrap-up, agent.

use serde::Serialize;
use serde_json::{Map, Value};

use super::fields::{
    operator_names, transcript_lines, utc_offset_minutes, Attachment, CustomField, CustomVariable,
    Fields, VisitorStatus,
};
use super::shape::{Kind, Shape};
use super::time::Timestamp;

/// The visitor, present in every event except Agent Status Changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Visitor {
    pub id: Option<String>,
    pub chat_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub product_service: Option<String>,
    pub department: Option<String>,
    pub skill: Option<String>,
    pub status: Option<VisitorStatus>,
    pub time_zone: Option<String>,
    pub utc_offset_minutes: Option<i32>,
    pub ip: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub country: Option<String>,
    pub language: Option<String>,
    pub browser: Option<String>,
    pub operating_system: Option<String>,
    pub screen_resolution: Option<String>,
    pub flash_version: Option<String>,
    pub current_browsing: Option<String>,
    pub landing_page: Option<String>,
    pub referrer_url: Option<String>,
    pub search_engine: Option<String>,
    pub keywords: Option<String>,
    pub chats: Option<u64>,
    pub visits: Option<u64>,
    pub page_views: Option<u64>,
    pub first_visit_time: Option<Timestamp>,
    pub visit_time: Option<Timestamp>,
    pub custom_fields: Vec<CustomField>,
    pub custom_variables: Vec<CustomVariable>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Visitor {
    /// The keys read from the payload, alphabetical as Comm100 sends them; `normalize` takes
    /// them in the same order.
    pub(crate) const SHAPE: Shape = Shape {
        keys: &[
            ("browser", Kind::Json),
            ("chat_id", Kind::Json),
            ("chats", Kind::Json),
            ("city", Kind::Json),
            ("company", Kind::Json),
            ("country", Kind::Json),
            ("current_browsing", Kind::Json),
            ("custom_fields", Kind::Objects(&CustomField::SHAPE)),
            ("custom_variable", Kind::Objects(&CustomVariable::SHAPE)),
            ("custom_variables", Kind::Objects(&CustomVariable::SHAPE)),
            ("department", Kind::Json),
            ("email", Kind::Json),
            ("first_visit_time", Kind::Json),
            ("flash_version", Kind::Json),
            ("id", Kind::Json),
            ("ip", Kind::Json),
            ("keywords", Kind::Json),
            ("landing_page", Kind::Json),
            ("language", Kind::Json),
            ("name", Kind::Json),
            ("operating_system", Kind::Json),
            ("page_views", Kind::Json),
            ("phone", Kind::Json),
            ("product_service", Kind::Json),
            ("referrer_url", Kind::Json),
            ("screen_resolution", Kind::Json),
            ("search_engine", Kind::Json),
            ("skill", Kind::Json),
            ("state", Kind::Json),
            ("status", Kind::Json),
            ("time_zone", Kind::Json),
            ("visit_time", Kind::Json),
            ("visits", Kind::Json),
        ],
    };

    pub(crate) fn normalize(mut f: Fields) -> Self {
        let mut visitor = Self {
            browser: f.text("browser"),
            chat_id: f.id("chat_id"),
            chats: f.count("chats"),
            city: f.text("city"),
            company: f.text("company"),
            country: f.text("country"),
            current_browsing: f.text("current_browsing"),
            custom_fields: f.custom_fields("custom_fields"),
            custom_variables: f.custom_variables(),
            department: f.department("department"),
            email: f.text("email"),
            first_visit_time: f.time("first_visit_time"),
            flash_version: f.text("flash_version"),
            id: f.id("id"),
            ip: f.text("ip"),
            keywords: f.text("keywords"),
            landing_page: f.text("landing_page"),
            language: f.text("language"),
            name: f.text("name"),
            operating_system: f.text("operating_system"),
            page_views: f.count("page_views"),
            phone: f.text("phone"),
            product_service: f.text("product_service"),
            referrer_url: f.text("referrer_url"),
            screen_resolution: f.text("screen_resolution"),
            search_engine: f.text("search_engine"),
            skill: f.text("skill"),
            state: f.text("state"),
            status: f.with("status", VisitorStatus::from_value),
            time_zone: f.text("time_zone"),
            utc_offset_minutes: None,
            visit_time: f.time("visit_time"),
            visits: f.count("visits"),
            extra: f.finish(),
        };
        visitor.utc_offset_minutes = visitor.time_zone.as_deref().and_then(utc_offset_minutes);
        visitor
    }
}

/// The chat of Chat Ended and Chat Transferred.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chat {
    pub id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub product_service: Option<String>,
    pub department: Option<String>,
    pub skill: Option<String>,
    pub operators: Vec<String>,
    pub start_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub waiting_time: Option<String>,
    pub rating: Option<String>,
    pub rating_comment: Option<String>,
    pub operator_comment: Option<String>,
    pub transcript: Vec<String>,
    pub attachment: Vec<Attachment>,
    pub custom_fields: Vec<CustomField>,
    pub custom_variables: Vec<CustomVariable>,
    pub wrap_up: Option<Wrapup>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Chat {
    /// The keys read from the payload, alphabetical as Comm100 sends them; `normalize` takes
    /// them in the same order.
    pub(crate) const SHAPE: Shape = Shape {
        keys: &[
            ("attachment", Kind::Objects(&Attachment::SHAPE)),
            ("chat_transcript", Kind::Json),
            ("company", Kind::Json),
            ("custom_fields", Kind::Objects(&CustomField::SHAPE)),
            ("custom_variable", Kind::Objects(&CustomVariable::SHAPE)),
            ("custom_variables", Kind::Objects(&CustomVariable::SHAPE)),
            ("department", Kind::Json),
            ("email", Kind::Json),
            ("end_time", Kind::Json),
            ("id", Kind::Json),
            ("name", Kind::Json),
            ("operator_comment", Kind::Json),
            ("operators", Kind::Json),
            ("phone", Kind::Json),
            ("product_service", Kind::Json),
            ("rating", Kind::Json),
            ("rating_comment", Kind::Json),
            ("skill", Kind::Json),
            ("start_time", Kind::Json),
            ("waiting_time", Kind::Json),
            ("wrap_up", Kind::Object(&Wrapup::SHAPE)),
        ],
    };

    pub(crate) fn normalize(mut f: Fields) -> Self {
        Self {
            attachment: f.attachments("attachment"),
            transcript: f
                .with("chat_transcript", |v| v.as_str().map(transcript_lines))
                .unwrap_or_default(),
            company: f.text("company"),
            custom_fields: f.custom_fields("custom_fields"),
            custom_variables: f.custom_variables(),
            department: f.department("department"),
            email: f.text("email"),
            end_time: f.time("end_time"),
            id: f.id("id"),
            name: f.text("name"),
            operator_comment: f.text("operator_comment"),
            operators: f.with("operators", operator_names).unwrap_or_default(),
            phone: f.text("phone"),
            product_service: f.text("product_service"),
            rating: f.text("rating"),
            rating_comment: f.text("rating_comment"),
            skill: f.text("skill"),
            start_time: f.time("start_time"),
            waiting_time: f.text("waiting_time"),
            wrap_up: f.object("wrap_up", Wrapup::normalize),
            extra: f.finish(),
        }
    }
}

/// The message of Offline Message Submitted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OfflineMessage {
    pub id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub department: Option<String>,
    pub skill: Option<String>,
    pub subject: Option<String>,
    pub content: Option<String>,
    pub time: Option<Timestamp>,
    pub attachment: Vec<Attachment>,
    pub custom_fields: Vec<CustomField>,
    pub custom_variables: Vec<CustomVariable>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl OfflineMessage {
    /// The keys read from the payload, alphabetical as Comm100 sends them; `normalize` takes
    /// them in the same order.
    pub(crate) const SHAPE: Shape = Shape {
        keys: &[
            ("attachment", Kind::Objects(&Attachment::SHAPE)),
            ("company", Kind::Json),
            ("content", Kind::Json),
            ("custom_fields", Kind::Objects(&CustomField::SHAPE)),
            ("custom_variable", Kind::Objects(&CustomVariable::SHAPE)),
            ("custom_variables", Kind::Objects(&CustomVariable::SHAPE)),
            ("department", Kind::Json),
            ("email", Kind::Json),
            ("id", Kind::Json),
            ("name", Kind::Json),
            ("phone", Kind::Json),
            ("skill", Kind::Json),
            ("subject", Kind::Json),
            ("time", Kind::Json),
        ],
    };

    pub(crate) fn normalize(mut f: Fields) -> Self {
        Self {
            attachment: f.attachments("attachment"),
            company: f.text("company"),
            content: f.text("content"),
            custom_fields: f.custom_fields("custom_fields"),
            custom_variables: f.custom_variables(),
            department: f.department("department"),
            email: f.text("email"),
            id: f.id("id"),
            name: f.text("name"),
            phone: f.text("phone"),
            skill: f.text("skill"),
            subject: f.text("subject"),
            time: f.time("time"),
            extra: f.finish(),
        }
    }
}

/// A wrap-up form: top-level `wrapup` of Chat Wrapped-Up, or `chat.wrap_up`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Wrapup {
    pub category: Option<String>,
    pub comment: Option<String>,
    pub time: Option<Timestamp>,
    pub fields: Vec<CustomField>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Wrapup {
    /// The keys read from the payload, alphabetical as Comm100 sends them; `normalize` takes
    /// them in the same order.
    pub(crate) const SHAPE: Shape = Shape {
        keys: &[
            ("category", Kind::Json),
            ("comment", Kind::Json),
            ("fields", Kind::Objects(&CustomField::SHAPE)),
            ("time", Kind::Json),
        ],
    };

    pub(crate) fn normalize(mut f: Fields) -> Self {
        Self {
            category: f.text("category"),
            comment: f.text("comment"),
            fields: f.custom_fields("fields"),
            time: f.time("time"),
            extra: f.finish(),
        }
    }
}

/// The agent of Agent Status Changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agent {
    pub operator_id: Option<String>,
    pub status: AgentStatus,
}

/// The new status, which Comm100 sends as the `event` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Online,
    Away,
    Login,
    Logout,
}
