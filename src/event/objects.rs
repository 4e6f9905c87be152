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
    /// The keys read from the payload.
    pub(crate) const SHAPE: Shape = Shape {
        keys: &[
            ("time_zone", Kind::Json),
            ("id", Kind::Json),
            ("chat_id", Kind::Json),
            ("name", Kind::Json),
            ("email", Kind::Json),
            ("phone", Kind::Json),
            ("company", Kind::Json),
            ("product_service", Kind::Json),
            ("department", Kind::Json),
            ("skill", Kind::Json),
            ("status", Kind::Json),
            ("ip", Kind::Json),
            ("city", Kind::Json),
            ("state", Kind::Json),
            ("country", Kind::Json),
            ("language", Kind::Json),
            ("browser", Kind::Json),
            ("operating_system", Kind::Json),
            ("screen_resolution", Kind::Json),
            ("flash_version", Kind::Json),
            ("current_browsing", Kind::Json),
            ("landing_page", Kind::Json),
            ("referrer_url", Kind::Json),
            ("search_engine", Kind::Json),
            ("keywords", Kind::Json),
            ("chats", Kind::Json),
            ("visits", Kind::Json),
            ("page_views", Kind::Json),
            ("first_visit_time", Kind::Json),
            ("visit_time", Kind::Json),
            ("custom_fields", Kind::Objects(&CustomField::SHAPE)),
            ("custom_variables", Kind::Objects(&CustomVariable::SHAPE)),
            ("custom_variable", Kind::Objects(&CustomVariable::SHAPE)),
        ],
    };

    pub(crate) fn normalize(mut f: Fields) -> Self {
        let time_zone = f.text("time_zone");
        Self {
            id: f.id("id"),
            chat_id: f.id("chat_id"),
            name: f.text("name"),
            email: f.text("email"),
            phone: f.text("phone"),
            company: f.text("company"),
            product_service: f.text("product_service"),
            department: f.department("department"),
            skill: f.text("skill"),
            status: f.with("status", VisitorStatus::from_value),
            utc_offset_minutes: time_zone.as_deref().and_then(utc_offset_minutes),
            time_zone,
            ip: f.text("ip"),
            city: f.text("city"),
            state: f.text("state"),
            country: f.text("country"),
            language: f.text("language"),
            browser: f.text("browser"),
            operating_system: f.text("operating_system"),
            screen_resolution: f.text("screen_resolution"),
            flash_version: f.text("flash_version"),
            current_browsing: f.text("current_browsing"),
            landing_page: f.text("landing_page"),
            referrer_url: f.text("referrer_url"),
            search_engine: f.text("search_engine"),
            keywords: f.text("keywords"),
            chats: f.count("chats"),
            visits: f.count("visits"),
            page_views: f.count("page_views"),
            first_visit_time: f.time("first_visit_time"),
            visit_time: f.time("visit_time"),
            custom_fields: f.custom_fields("custom_fields"),
            custom_variables: f.custom_variables(),
            extra: f.finish(),
        }
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
    /// The keys read from the payload.
    pub(crate) const SHAPE: Shape = Shape {
        keys: &[
            ("id", Kind::Json),
            ("name", Kind::Json),
            ("email", Kind::Json),
            ("phone", Kind::Json),
            ("company", Kind::Json),
            ("product_service", Kind::Json),
            ("department", Kind::Json),
            ("skill", Kind::Json),
            ("operators", Kind::Json),
            ("start_time", Kind::Json),
            ("end_time", Kind::Json),
            ("waiting_time", Kind::Json),
            ("rating", Kind::Json),
            ("rating_comment", Kind::Json),
            ("operator_comment", Kind::Json),
            ("chat_transcript", Kind::Json),
            ("attachment", Kind::Objects(&Attachment::SHAPE)),
            ("custom_fields", Kind::Objects(&CustomField::SHAPE)),
            ("wrap_up", Kind::Object(&Wrapup::SHAPE)),
            ("custom_variables", Kind::Objects(&CustomVariable::SHAPE)),
            ("custom_variable", Kind::Objects(&CustomVariable::SHAPE)),
        ],
    };

    pub(crate) fn normalize(mut f: Fields) -> Self {
        Self {
            id: f.id("id"),
            name: f.text("name"),
            email: f.text("email"),
            phone: f.text("phone"),
            company: f.text("company"),
            product_service: f.text("product_service"),
            department: f.department("department"),
            skill: f.text("skill"),
            operators: f.with("operators", operator_names).unwrap_or_default(),
            start_time: f.time("start_time"),
            end_time: f.time("end_time"),
            waiting_time: f.text("waiting_time"),
            rating: f.text("rating"),
            rating_comment: f.text("rating_comment"),
            operator_comment: f.text("operator_comment"),
            transcript: f
                .with("chat_transcript", |v| v.as_str().map(transcript_lines))
                .unwrap_or_default(),
            attachment: f.attachments("attachment"),
            custom_fields: f.custom_fields("custom_fields"),
            custom_variables: f.custom_variables(),
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
    /// The keys read from the payload.
    pub(crate) const SHAPE: Shape = Shape {
        keys: &[
            ("id", Kind::Json),
            ("name", Kind::Json),
            ("email", Kind::Json),
            ("phone", Kind::Json),
            ("company", Kind::Json),
            ("department", Kind::Json),
            ("skill", Kind::Json),
            ("subject", Kind::Json),
            ("content", Kind::Json),
            ("time", Kind::Json),
            ("attachment", Kind::Objects(&Attachment::SHAPE)),
            ("custom_fields", Kind::Objects(&CustomField::SHAPE)),
            ("custom_variables", Kind::Objects(&CustomVariable::SHAPE)),
            ("custom_variable", Kind::Objects(&CustomVariable::SHAPE)),
        ],
    };

    pub(crate) fn normalize(mut f: Fields) -> Self {
        Self {
            id: f.id("id"),
            name: f.text("name"),
            email: f.text("email"),
            phone: f.text("phone"),
            company: f.text("company"),
            department: f.department("department"),
            skill: f.text("skill"),
            subject: f.text("subject"),
            content: f.text("content"),
            time: f.time("time"),
            attachment: f.attachments("attachment"),
            custom_fields: f.custom_fields("custom_fields"),
            custom_variables: f.custom_variables(),
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
    /// The keys read from the payload.
    pub(crate) const SHAPE: Shape = Shape {
        keys: &[
            ("category", Kind::Json),
            ("comment", Kind::Json),
            ("time", Kind::Json),
            ("fields", Kind::Objects(&CustomField::SHAPE)),
        ],
    };

    pub(crate) fn normalize(mut f: Fields) -> Self {
        Self {
            category: f.text("category"),
            comment: f.text("comment"),
            time: f.time("time"),
            fields: f.custom_fields("fields"),
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
