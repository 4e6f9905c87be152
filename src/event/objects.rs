//! The normalized objects of a record: visitor, chat, offline message, wrap-up, agent.

use serde::Serialize;
use serde_json::{Map, Value};

use super::fields::{
    utc_offset_minutes, Attachment, CustomField, CustomVariable, Fields, Text, VisitorStatus,
};
use super::shape::{Kind, Shape};
use super::time::Timestamp;

/// The visitor, present in every event except Agent Status Changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Visitor<'a> {
    pub id: Option<Text<'a>>,
    pub chat_id: Option<Text<'a>>,
    pub name: Option<Text<'a>>,
    pub email: Option<Text<'a>>,
    pub phone: Option<Text<'a>>,
    pub company: Option<Text<'a>>,
    pub product_service: Option<Text<'a>>,
    pub department: Option<Text<'a>>,
    pub skill: Option<Text<'a>>,
    pub status: Option<VisitorStatus>,
    pub time_zone: Option<Text<'a>>,
    pub utc_offset_minutes: Option<i32>,
    pub ip: Option<Text<'a>>,
    pub city: Option<Text<'a>>,
    pub state: Option<Text<'a>>,
    pub country: Option<Text<'a>>,
    pub language: Option<Text<'a>>,
    pub browser: Option<Text<'a>>,
    pub operating_system: Option<Text<'a>>,
    pub screen_resolution: Option<Text<'a>>,
    pub flash_version: Option<Text<'a>>,
    pub current_browsing: Option<Text<'a>>,
    pub landing_page: Option<Text<'a>>,
    pub referrer_url: Option<Text<'a>>,
    pub search_engine: Option<Text<'a>>,
    pub keywords: Option<Text<'a>>,
    pub chats: Option<u64>,
    pub visits: Option<u64>,
    pub page_views: Option<u64>,
    pub first_visit_time: Option<Timestamp>,
    pub visit_time: Option<Timestamp>,
    pub custom_fields: Vec<CustomField<'a>>,
    pub custom_variables: Vec<CustomVariable<'a>>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl<'a> Visitor<'a> {
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

    pub(crate) fn normalize(mut f: Fields<'a, '_>) -> Self {
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
            status: f.visitor_status("status"),
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
pub struct Chat<'a> {
    pub id: Option<Text<'a>>,
    pub name: Option<Text<'a>>,
    pub email: Option<Text<'a>>,
    pub phone: Option<Text<'a>>,
    pub company: Option<Text<'a>>,
    pub product_service: Option<Text<'a>>,
    pub department: Option<Text<'a>>,
    pub skill: Option<Text<'a>>,
    pub operators: Vec<Text<'a>>,
    pub start_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub waiting_time: Option<Text<'a>>,
    pub rating: Option<Text<'a>>,
    pub rating_comment: Option<Text<'a>>,
    pub operator_comment: Option<Text<'a>>,
    pub transcript: Vec<Text<'a>>,
    pub attachment: Vec<Attachment<'a>>,
    pub custom_fields: Vec<CustomField<'a>>,
    pub custom_variables: Vec<CustomVariable<'a>>,
    pub wrap_up: Option<Wrapup<'a>>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl<'a> Chat<'a> {
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

    pub(crate) fn normalize(mut f: Fields<'a, '_>) -> Self {
        Self {
            attachment: f.attachments("attachment"),
            transcript: f.transcript("chat_transcript"),
            company: f.text("company"),
            custom_fields: f.custom_fields("custom_fields"),
            custom_variables: f.custom_variables(),
            department: f.department("department"),
            email: f.text("email"),
            end_time: f.time("end_time"),
            id: f.id("id"),
            name: f.text("name"),
            operator_comment: f.text("operator_comment"),
            operators: f.operators("operators"),
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
pub struct OfflineMessage<'a> {
    pub id: Option<Text<'a>>,
    pub name: Option<Text<'a>>,
    pub email: Option<Text<'a>>,
    pub phone: Option<Text<'a>>,
    pub company: Option<Text<'a>>,
    pub department: Option<Text<'a>>,
    pub skill: Option<Text<'a>>,
    pub subject: Option<Text<'a>>,
    pub content: Option<Text<'a>>,
    pub time: Option<Timestamp>,
    pub attachment: Vec<Attachment<'a>>,
    pub custom_fields: Vec<CustomField<'a>>,
    pub custom_variables: Vec<CustomVariable<'a>>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl<'a> OfflineMessage<'a> {
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

    pub(crate) fn normalize(mut f: Fields<'a, '_>) -> Self {
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
pub struct Wrapup<'a> {
    pub category: Option<Text<'a>>,
    pub comment: Option<Text<'a>>,
    pub time: Option<Timestamp>,
    pub fields: Vec<CustomField<'a>>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl<'a> Wrapup<'a> {
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

    pub(crate) fn normalize(mut f: Fields<'a, '_>) -> Self {
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
pub struct Agent<'a> {
    pub operator_id: Option<Text<'a>>,
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
