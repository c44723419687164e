"""netback"""
