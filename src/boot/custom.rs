//! SHIM
#![allow(dead_code, unused_variables)]
use super::*;
use std::path::PathBuf;
pub struct CustomBackend;
impl CustomBackend {
    pub fn new(script: PathBuf) -> CustomBackend {
        CustomBackend
    }
}
impl Bootloader for CustomBackend {
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
