//! SHIM
#![allow(dead_code, unused_variables)]
use super::*;
use std::path::PathBuf;
pub struct UbootBackend;
impl UbootBackend {
    pub fn new(fw_env_config: PathBuf, tries: u32) -> Result<UbootBackend, BootError> {
        Ok(UbootBackend)
    }
}
impl Bootloader for UbootBackend {
    fn primary(&self) -> Result<Option<SlotName>, BootError> {
        todo!()
    }
    fn state(&self, slot: SlotName) -> Result<BootState, BootError> {
        todo!()
    }
    fn set_state(&self, slot: SlotName, state: BootState) -> Result<(), BootError> {
        todo!()
    }
    fn activate(&self, slot: SlotName) -> Result<(), BootError> {
        todo!()
    }
    fn describe(&self) -> Result<Vec<(String, String)>, BootError> {
        todo!()
    }
}
