"""netfront"""
