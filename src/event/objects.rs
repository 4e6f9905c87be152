//! The normalized objects of a record: visitor, chat, offline message, wrap-up, agent.
//! Each is declared once, with `payload_object!` (in the parent module).

use serde::Serialize;
use serde_json::{Map, Value};

use super::fields::{
    utc_offset_minutes, Attachment, CustomField, CustomVariable, Fields, Text, VisitorStatus,
};
use super::shape::{sorted, Kind, Shape};
use super::time::Timestamp;

payload_object! {
    /// The visitor, present in every event except Agent Status Changed.
    Visitor {
        id: Option<Text<'a>> = id("id"),
        chat_id: Option<Text<'a>> = id("chat_id"),
        name: Option<Text<'a>> = text("name"),
        email: Option<Text<'a>> = text("email"),
        phone: Option<Text<'a>> = text("phone"),
        company: Option<Text<'a>> = text("company"),
        product_service: Option<Text<'a>> = text("product_service"),
        department: Option<Text<'a>> = department("department"),
        skill: Option<Text<'a>> = text("skill"),
        status: Option<VisitorStatus> = visitor_status("status"),
        time_zone: Option<Text<'a>> = text("time_zone"),
        utc_offset_minutes: Option<i32> = derived(),
        ip: Option<Text<'a>> = text("ip"),
        city: Option<Text<'a>> = text("city"),
        state: Option<Text<'a>> = text("state"),
        country: Option<Text<'a>> = text("country"),
        language: Option<Text<'a>> = text("language"),
        browser: Option<Text<'a>> = text("browser"),
        operating_system: Option<Text<'a>> = text("operating_system"),
        screen_resolution: Option<Text<'a>> = text("screen_resolution"),
        flash_version: Option<Text<'a>> = text("flash_version"),
        current_browsing: Option<Text<'a>> = text("current_browsing"),
        landing_page: Option<Text<'a>> = text("landing_page"),
        referrer_url: Option<Text<'a>> = text("referrer_url"),
        search_engine: Option<Text<'a>> = text("search_engine"),
        keywords: Option<Text<'a>> = text("keywords"),
        chats: Option<u64> = count("chats"),
        visits: Option<u64> = count("visits"),
        page_views: Option<u64> = count("page_views"),
        first_visit_time: Option<Timestamp> = time("first_visit_time"),
        visit_time: Option<Timestamp> = time("visit_time"),
        custom_fields: Vec<CustomField<'a>> = custom_fields("custom_fields"),
        custom_variables: Vec<CustomVariable<'a>> =
            custom_variables("custom_variables", "custom_variable"),
    }
    then |visitor| {
        visitor.utc_offset_minutes = visitor.time_zone.as_deref().and_then(utc_offset_minutes);
    }
}

payload_object! {
    /// The chat of Chat Ended and Chat Transferred.
    Chat {
        id: Option<Text<'a>> = id("id"),
        name: Option<Text<'a>> = text("name"),
        email: Option<Text<'a>> = text("email"),
        phone: Option<Text<'a>> = text("phone"),
        company: Option<Text<'a>> = text("company"),
        product_service: Option<Text<'a>> = text("product_service"),
        department: Option<Text<'a>> = department("department"),
        skill: Option<Text<'a>> = text("skill"),
        operators: Vec<Text<'a>> = operators("operators"),
        start_time: Option<Timestamp> = time("start_time"),
        end_time: Option<Timestamp> = time("end_time"),
        waiting_time: Option<Text<'a>> = text("waiting_time"),
        rating: Option<Text<'a>> = text("rating"),
        rating_comment: Option<Text<'a>> = text("rating_comment"),
        operator_comment: Option<Text<'a>> = text("operator_comment"),
        transcript: Vec<Text<'a>> = transcript("chat_transcript"),
        attachment: Vec<Attachment<'a>> = attachments("attachment"),
        custom_fields: Vec<CustomField<'a>> = custom_fields("custom_fields"),
        custom_variables: Vec<CustomVariable<'a>> =
            custom_variables("custom_variables", "custom_variable"),
        wrap_up: Option<Wrapup<'a>> = wrapup("wrap_up"),
    }
}

payload_object! {
    /// The message of Offline Message Submitted.
    OfflineMessage {
        id: Option<Text<'a>> = id("id"),
        name: Option<Text<'a>> = text("name"),
        email: Option<Text<'a>> = text("email"),
        phone: Option<Text<'a>> = text("phone"),
        company: Option<Text<'a>> = text("company"),
        department: Option<Text<'a>> = department("department"),
        skill: Option<Text<'a>> = text("skill"),
        subject: Option<Text<'a>> = text("subject"),
        content: Option<Text<'a>> = text("content"),
        time: Option<Timestamp> = time("time"),
        attachment: Vec<Attachment<'a>> = attachments("attachment"),
        custom_fields: Vec<CustomField<'a>> = custom_fields("custom_fields"),
        custom_variables: Vec<CustomVariable<'a>> =
            custom_variables("custom_variables", "custom_variable"),
    }
}

payload_object! {
    /// A wrap-up form: top-level `wrapup` of Chat Wrapped-Up, or `chat.wrap_up`.
    Wrapup {
        category: Option<Text<'a>> = text("category"),
        comment: Option<Text<'a>> = text("comment"),
        time: Option<Timestamp> = time("time"),
        fields: Vec<CustomField<'a>> = custom_fields("fields"),
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
